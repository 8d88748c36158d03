//! Housekeeping shared by all controller instances: each keeps `controller:<instance>` alive;
//! any of them hands the routing lists of dead instances to the router as replays, and ends
//! commands whose `max_wait` ran out before their agent asked for them.

use std::time::Duration;

use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use schemas::{JobResult, JobState};

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
    let _: Result<(), _> = state.conn().del(keys::controller(&state.instance)).await;
}

async fn keep_alive(state: &Shared) -> redis::RedisResult<()> {
    let ttl = ALIVE_TTL.as_millis() as u64;
    state
        .conn()
        .pset_ex(keys::controller(&state.instance), schemas::now_ms(), ttl)
        .await
}

/// Replays the routing list of every instance whose liveness key is gone.
async fn recover_dead(state: &Shared) -> redis::RedisResult<()> {
    let mut conn = state.conn();
    let lists: Vec<String> = {
        let mut iter: redis::AsyncIter<String> = conn.scan_match(keys::ROUTING_PATTERN).await?;
        let mut out = vec![];
        while let Some(k) = futures::StreamExt::next(&mut iter).await {
            out.push(k?);
        }
        out
    };
    for list in lists {
        let Some(instance) = keys::routing_instance(&list) else {
            continue;
        };
        if instance == state.instance || conn.exists(keys::controller(instance)).await? {
            continue;
        }
        let lock = keys::recovering(instance);
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
        let mut items: Vec<Vec<u8>> = conn.lrange(&list, 0, -1).await?;
        items.reverse(); // oldest first
        tracing::info!(
            dead_instance = instance,
            commands = items.len(),
            "replaying a dead instance's routing list"
        );
        router::route_batch(state, items, true).await?;
        let _: () = conn.del(&[list.as_str(), lock.as_str()]).await?;
    }
    Ok(())
}

/// Ends commands that waited for their (offline) agent longer than their `max_wait`.
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
            let removed: i64 = state
                .scripts
                .expire_waiting
                .key(keys::agent_queue(agent))
                .arg(&raw)
                .invoke_async(&mut conn)
                .await?;
            if removed == 1 {
                let (gid, nid) = router::split_agent(agent);
                let cmd = serde_json::from_str::<schemas::Command>(&raw).ok();
                let (name, args) = cmd.map(|c| (c.cmd, c.args)).unwrap_or_default();
                let wait = serde_json::from_str::<serde_json::Value>(&raw)
                    .ok()
                    .and_then(|v| v["args"]["max_wait"].as_u64())
                    .unwrap_or(0);
                let mut result = JobResult::error(
                    id,
                    gid,
                    nid,
                    &name,
                    args,
                    format!(
                        "not delivered: agent {agent} did not ask for it within max_wait {wait} s"
                    ),
                );
                result.state = JobState::Error;
                results::record(state, agent, &result).await?;
            }
        }
        let _: () = conn.zrem(keys::DEADLINES, &member).await?;
    }
    Ok(())
}
