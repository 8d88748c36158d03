//! Routing (DESIGN §5.1): moves commands from `cmds_queue` into this instance's routing list,
//! validates them, writes `job:<id>`, pushes them onto their agents' queues, and only then
//! forgets them. A crash at any step loses nothing: the routing list is replayed (by this
//! instance after a Redis error, by another one after a crash) and a replay is recognised by
//! `job:<id>` holding the same command.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::try_join_all;
use rand::seq::IndexedRandom;
use redis::aio::ConnectionManager;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use schemas::{Command, JobResult, Target};

use crate::state::{AppState, Shared};
use crate::{agents, keys};

/// What became of one command.
enum Route {
    /// Agents to push it to.
    To(Command, Vec<String>),
    /// It cannot run: dead-letter it and answer `ERROR` when the id is known.
    Fail {
        id: Option<String>,
        cmd: Option<Command>,
        reason: String,
    },
}

/// Runs the routing loop until `shutdown`; Redis errors are retried with backoff.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut blocking = match crate::state::connection(&state.redis, Duration::from_secs(10)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "router cannot connect to redis");
            return;
        }
    };
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match step(&state, &mut blocking).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "routing step failed; the routing list will be replayed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One routing step: replays what a failed step left, else routes the next batch.
async fn step(state: &Shared, blocking: &mut ConnectionManager) -> redis::RedisResult<()> {
    let routing = keys::routing(&state.instance);
    let mut conn = state.conn();
    let mut leftover: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(&routing)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await?;
    if !leftover.is_empty() {
        leftover.reverse(); // oldest first
        route_batch(state, leftover, true).await?;
        return redis::cmd("DEL").arg(&routing).query_async(&mut conn).await;
    }
    let first: Option<Vec<u8>> = redis::cmd("BLMOVE")
        .arg(keys::CMDS_QUEUE)
        .arg(&routing)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(1.0)
        .query_async(blocking)
        .await?;
    let Some(first) = first else { return Ok(()) };
    let mut batch = vec![first];
    if state.config.route_batch > 1 {
        let more: Vec<Vec<u8>> = state
            .scripts
            .take_batch
            .key(keys::CMDS_QUEUE)
            .key(&routing)
            .arg(state.config.route_batch - 1)
            .invoke_async(&mut conn)
            .await?;
        batch.extend(more);
    }
    route_batch(state, batch, false).await?;
    redis::cmd("DEL").arg(&routing).query_async(&mut conn).await
}

/// Routes a batch of raw commands. `replay`: they come from a routing list, and may have been
/// partly routed already.
pub async fn route_batch(
    state: &Shared,
    batch: Vec<Vec<u8>>,
    replay: bool,
) -> redis::RedisResult<()> {
    let mut role_cache: HashMap<(u64, String), Vec<String>> = HashMap::new();
    let mut routes = Vec::with_capacity(batch.len());
    for raw in &batch {
        routes.push(plan(state, raw, &mut role_cache).await?);
    }
    try_join_all(
        batch
            .iter()
            .zip(routes)
            .map(|(raw, route)| settle(state, raw, route, replay)),
    )
    .await?;
    Ok(())
}

/// Validates a command and finds its agents.
async fn plan(
    state: &Shared,
    raw: &[u8],
    role_cache: &mut HashMap<(u64, String), Vec<String>>,
) -> redis::RedisResult<Route> {
    let cmd = match Command::parse(raw) {
        Ok((cmd, _)) => cmd,
        Err((id, e)) => {
            return Ok(Route::Fail {
                id,
                cmd: None,
                reason: e.to_string(),
            })
        }
    };
    let fail = |cmd: Command, reason: String| Route::Fail {
        id: Some(cmd.id.clone()),
        cmd: Some(cmd),
        reason,
    };
    match cmd.target() {
        Ok(Target::Node { gid, nid }) => {
            let agent = keys::agent_id(gid, nid);
            if state.tokens.has_token(&mut state.conn(), &agent).await? {
                Ok(Route::To(cmd, vec![agent]))
            } else {
                let reason = format!(
                    "unknown agent {agent}: it has no token (add one with `jsacc token add --gid {gid} --nid {nid}`)"
                );
                Ok(fail(cmd, reason))
            }
        }
        Ok(Target::Role { gid, role, fanout }) => {
            let key = (gid, role.clone());
            if !role_cache.contains_key(&key) {
                let found = agents::with_role(state, gid, &role).await?;
                role_cache.insert(key.clone(), found);
            }
            let live = &role_cache[&key];
            if live.is_empty() {
                return Ok(fail(
                    cmd,
                    format!("no live agent with role `{role}` in grid {gid}"),
                ));
            }
            let targets = if fanout {
                live.clone()
            } else {
                live.choose(&mut rand::rng()).into_iter().cloned().collect()
            };
            Ok(Route::To(cmd, targets))
        }
        Err(e) => Ok(fail(cmd, e.to_string())),
    }
}

/// Carries out one route: job record, agent queues and wake-ups, or the dead letter.
async fn settle(state: &Shared, raw: &[u8], route: Route, replay: bool) -> redis::RedisResult<()> {
    let mut conn = state.conn();
    let ttl = state.config.result_ttl.as_secs();
    let (cmd, targets) = match route {
        Route::Fail { id, cmd, reason } => {
            return fail(state, raw, id, cmd.as_ref(), &reason).await
        }
        Route::To(cmd, targets) => (cmd, targets),
    };
    let targets_json = serde_json::to_string(&targets).unwrap_or_else(|_| "[]".into());
    let created: i64 = state
        .scripts
        .create_job
        .key(keys::job(&cmd.id))
        .arg(raw)
        .arg(&targets_json)
        .arg(schemas::now_ms())
        .arg(ttl)
        .invoke_async(&mut conn)
        .await?;
    match (created, replay) {
        (1, _) | (0, true) => {}
        _ => return fail(state, raw, Some(cmd.id.clone()), Some(&cmd), "duplicate id").await,
    }
    // On a replay the record may name other targets (a role pick): keep the recorded ones.
    let targets = if created == 0 {
        recorded_targets(&mut conn, &cmd.id)
            .await?
            .unwrap_or(targets)
    } else {
        targets
    };
    let max_wait = cmd.max_wait();
    let mut pipe = redis::pipe();
    for agent in &targets {
        pipe.lpush(keys::agent_queue(agent), raw).ignore();
        if max_wait > 0 {
            let deadline = schemas::now_ms() + max_wait * 1000;
            pipe.zadd(keys::DEADLINES, format!("{agent}|{}", cmd.id), deadline)
                .ignore();
        }
        let (gid, nid) = split_agent(agent);
        let event = json!({"id": cmd.id, "gid": gid, "nid": nid, "state": "QUEUED"}).to_string();
        pipe.publish(keys::EVENTS, event).ignore();
    }
    pipe.exec_async(&mut conn).await?;
    state.metrics.routed(targets.len());
    Ok(())
}

async fn recorded_targets(
    conn: &mut ConnectionManager,
    id: &str,
) -> redis::RedisResult<Option<Vec<String>>> {
    let raw: Option<String> = redis::cmd("HGET")
        .arg(keys::job(id))
        .arg("targets")
        .query_async(conn)
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Dead-letters a command and, when its id is known, answers it with an `ERROR` result.
async fn fail(
    state: &Shared,
    raw: &[u8],
    id: Option<String>,
    cmd: Option<&Command>,
    reason: &str,
) -> redis::RedisResult<()> {
    let mut conn = state.conn();
    let text = String::from_utf8_lossy(raw);
    let letter = json!({"raw": text, "reason": reason}).to_string();
    redis::pipe()
        .lpush(keys::DEAD, letter)
        .ignore()
        .ltrim(keys::DEAD, 0, state.config.dead_maxlen as isize - 1)
        .ignore()
        .exec_async(&mut conn)
        .await?;
    state.metrics.dead_lettered();
    tracing::debug!(
        id = id.as_deref().unwrap_or("-"),
        reason,
        "command dead-lettered"
    );
    let Some(id) = id else { return Ok(()) };
    let (gid, nid) = cmd.map(|c| (c.gid, c.nid.unwrap_or(0))).unwrap_or((0, 0));
    let name = cmd.map(|c| c.cmd.as_str()).unwrap_or("");
    let args = cmd
        .map(|c| c.args.clone())
        .unwrap_or(serde_json::Value::Null);
    let result = JobResult::error(&id, gid, nid, name, args, reason);
    let result = serde_json::to_string(&result).unwrap_or_default();
    let created: i64 = state
        .scripts
        .fail_job
        .key(keys::job(&id))
        .key(keys::results(&id))
        .arg(raw)
        .arg(&result)
        .arg(schemas::now_ms())
        .arg(state.config.result_ttl.as_secs())
        .invoke_async(&mut conn)
        .await?;
    if created == 1 {
        let event = json!({"id": id, "gid": gid, "nid": nid, "state": "ERROR"}).to_string();
        redis::cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg(event)
            .query_async::<()>(&mut conn)
            .await?;
    }
    state.metrics.finished("ERROR");
    Ok(())
}

/// `"gid:nid"` → (gid, nid).
pub fn split_agent(agent: &str) -> (u64, u64) {
    let (g, n) = agent.split_once(':').unwrap_or(("0", "0"));
    (g.parse().unwrap_or(0), n.parse().unwrap_or(0))
}
