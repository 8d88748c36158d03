//! Housekeeping shared by all controller instances: each keeps `controller:<instance>` alive;
//! any of them hands the routing lists of dead instances to the router as replays, and ends
//! commands whose `max_wait` ran out before their agent asked for them.

use std::time::Duration;

use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use schemas::JobResult;

use crate::state::{AppState, Shared};
use crate::{keys, results, router};

/// Lifetime of the liveness key; it is refreshed three times as often.
const ALIVE_TTL: Duration = Duration::from_secs(6);
const RECOVER_EVERY: Duration = Duration::from_secs(3);

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut alive = tokio::time::interval(ALIVE_TTL / 3);
    let mut recover = tokio::time::interval(RECOVER_EVERY);
    let mut deadlines = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = alive.tick() => {
                if let Err(e) = keep_alive(&state).await {
                    tracing::warn!(error = %e, "cannot refresh this instance's liveness key");
                }
            }
            _ = recover.tick() => {
                if let Err(e) = recover_dead(&state).await {
                    tracing::warn!(error = %e, "recovery of dead instances' routing lists failed; will retry");
                }
            }
            _ = deadlines.tick() => {
                if let Err(e) = expire_waiting(&state).await {
                    tracing::warn!(error = %e, "max_wait sweep failed; will retry");
                }
            }
        }
    }
}

/// Makes this instance known (liveness key and the instance set) before its router may move
/// anything into its routing list, so a crash at any later moment leaves a list others recover.
pub async fn register(state: &Shared) -> redis::RedisResult<()> {
    keep_alive(state).await
}

/// After a clean stop (the router has finished): forgets this instance if its routing list is
/// empty. If it is not, the registration stays and another instance replays the list.
pub async fn forget(state: &Shared) -> redis::RedisResult<()> {
    let mut conn = state.conn();
    let left: u64 = conn.llen(keys::routing(&state.instance)).await?;
    if left > 0 {
        tracing::warn!(
            commands = left,
            "stopping with commands in the routing list; another instance will replay them"
        );
        return Ok(());
    }
    redis::pipe()
        .del(keys::controller(&state.instance))
        .ignore()
        .srem(keys::INSTANCES, &state.instance)
        .ignore()
        .exec_async(&mut conn)
        .await
}

async fn keep_alive(state: &Shared) -> redis::RedisResult<()> {
    let ttl = ALIVE_TTL.as_millis() as u64;
    redis::pipe()
        .pset_ex(keys::controller(&state.instance), schemas::now_ms(), ttl)
        .ignore()
        .sadd(keys::INSTANCES, &state.instance)
        .ignore()
        .exec_async(&mut state.conn())
        .await
}

/// Replays the routing list of every known instance whose liveness key is gone, then forgets
/// the instance. Looks only at the members of `{cmds_queue}:instances`, never at the keyspace.
async fn recover_dead(state: &Shared) -> redis::RedisResult<()> {
    let mut conn = state.conn();
    let instances: Vec<String> = conn.smembers(keys::INSTANCES).await?;
    for instance in instances {
        if instance == state.instance || conn.exists(keys::controller(&instance)).await? {
            continue;
        }
        let lock = keys::recovering(&instance);
        let locked: bool = redis::cmd("SET")
            .arg(&lock)
            .arg(&state.instance)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        if !locked {
            continue;
        }
        let list = keys::routing(&instance);
        let mut items: Vec<Vec<u8>> = conn.lrange(&list, 0, -1).await?;
        items.reverse(); // oldest first
        if !items.is_empty() {
            tracing::info!(
                dead_instance = instance,
                commands = items.len(),
                "replaying a dead instance's routing list"
            );
        }
        let batch: Vec<(Vec<u8>, bool)> = items.into_iter().map(|raw| (raw, true)).collect();
        // The instance is forgotten once its list is empty.
        router::route_from(state, &list, &batch).await?;
        let left: u64 = conn.llen(&list).await?;
        let mut pipe = redis::pipe();
        if left == 0 {
            pipe.srem(keys::INSTANCES, &instance).ignore();
        }
        pipe.del(&lock).ignore().exec_async(&mut conn).await?;
    }
    Ok(())
}

/// How the answer to a command whose `max_wait` ran out begins.
const NOT_DELIVERED: &str = "not delivered";

/// Ends commands that waited for their (offline) agent longer than their `max_wait`. The
/// deadline is dropped only once the answer is recorded (and confirmed), so a failed sweep is
/// done again; `expire_waiting.lua` gives it the same verdict.
///
/// Each verdict costs O(log n) in Redis, whatever the queue's length: the command is not
/// searched for in the queue (an LREM scanned all of it, 11.8 ms on a 300k queue); it is taken
/// out when it waits at the queue's consuming end, else tombstoned, and `poll.lua` drops it
/// when its turn comes.
async fn expire_waiting(state: &Shared) -> redis::RedisResult<()> {
    let mut conn = state.conn();
    let due: Vec<String> = conn
        .zrangebyscore_limit(keys::DEADLINES, 0, schemas::now_ms(), 0, 100)
        .await?;
    for member in due {
        let Some((agent, id)) = member.split_once('|') else {
            let _: () = conn.zrem(keys::DEADLINES, &member).await?;
            continue;
        };
        let raw: Option<String> = conn.hget(keys::job(id), "cmd").await?;
        if let Some(raw) = raw {
            if expire(state, agent, id, &raw).await? {
                let result = not_delivered(agent, id, &raw);
                results::record(state, agent, &result).await?;
            }
        }
        let _: () = conn.zrem(keys::DEADLINES, &member).await?;
    }
    Ok(())
}

/// Runs `expire_waiting.lua`: whether the command will never be delivered (true) or was
/// handed to the agent. Confirmed before the answer: a tombstone a failover undid would let the
/// agent run a job its client was told was not delivered.
async fn expire(state: &Shared, agent: &str, id: &str, raw: &str) -> redis::RedisResult<bool> {
    let mut durable = state.durable().await?;
    let expired: i64 = state
        .scripts
        .expire_waiting
        .key(keys::agent_queue(agent))
        .key(keys::agent_expired(agent))
        .key(keys::agent_taken(agent))
        .key(keys::agent_popped(agent))
        .arg(id)
        .arg(schemas::now_ms())
        .arg(state.config.result_ttl.as_millis() as u64)
        .arg(raw)
        .invoke_async(&mut durable)
        .await?;
    state
        .confirm(&mut durable, &[keys::agent_expired(agent)])
        .await?;
    Ok(expired == 1)
}

/// The `ERROR` answer to a command (`raw`) that was not delivered to `agent` in time.
fn not_delivered(agent: &str, id: &str, raw: &str) -> JobResult {
    let (gid, nid) = keys::split_agent(agent);
    let (name, args, wait) = serde_json::from_str::<schemas::Command>(raw)
        .map(|c| {
            let wait = c.max_wait();
            (c.cmd, c.args, wait)
        })
        .unwrap_or_default();
    let reason =
        format!("{NOT_DELIVERED}: agent {agent} did not ask for it within max_wait {wait} s");
    JobResult::error(id, gid, nid, &name, args, reason)
}
