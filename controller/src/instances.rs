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
/// done again.
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
            // Confirmed before the answer: a removal a failover undid would let the agent run
            // a job its client was told was not delivered.
            let mut durable = state.durable().await?;
            let removed: i64 = state
                .scripts
                .expire_waiting
                .key(keys::agent_queue(agent))
                .arg(&raw)
                .invoke_async(&mut durable)
                .await?;
            state
                .confirm(&mut durable, &[keys::agent_queue(agent)])
                .await?;
            // An earlier sweep that took it out but failed before the answer was stored: the
            // answer is recorded again (once; recording is idempotent).
            let answered: Option<String> =
                conn.hget(keys::job(id), format!("result:{agent}")).await?;
            let expired_before = answered.is_some_and(|r| r.contains(NOT_DELIVERED));
            if removed > 0 || expired_before {
                let (gid, nid) = router::split_agent(agent);
                let (name, args, wait) = serde_json::from_str::<schemas::Command>(&raw)
                    .map(|c| {
                        let wait = c.max_wait();
                        (c.cmd, c.args, wait)
                    })
                    .unwrap_or_default();
                let reason = format!(
                    "{NOT_DELIVERED}: agent {agent} did not ask for it within max_wait {wait} s"
                );
                let result = JobResult::error(id, gid, nid, &name, args, reason);
                results::record(state, agent, &result).await?;
            }
        }
        let _: () = conn.zrem(keys::DEADLINES, &member).await?;
    }
    Ok(())
}
