//! Routing (DESIGN §5.1): moves commands from `cmds_queue` into this instance's routing list,
//! validates them, writes `job:<id>`, pushes them onto their agents' queues, and only then
//! forgets them. A crash at any step loses nothing: the routing list is replayed (by this
//! instance after a Redis error, by another one after a crash) and a replay is recognised by
//! `job:<id>` holding the same command.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::try_join_all;
use rand::seq::IndexedRandom;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use schemas::{Command, JobResult, Target};

use crate::redis_conn::Conn;
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
    let mut blocking = match state.redis.connect(Duration::from_secs(10)).await {
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
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One routing step: replays what a failed step left, else routes the next batch.
async fn step(state: &Shared, blocking: &mut Conn) -> redis::RedisResult<()> {
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
///
/// Two phases, each confirmed by `WAIT` when replicas are asked for: the job records first
/// (so no agent can run a command whose record a failover could lose: on a cluster they are in
/// other slots than the agents' queues), then the agents' queues. Only then may the caller take
/// the batch off its routing list.
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
    let mut conn = state.durable().await?;
    let pushes = try_join_all(
        batch
            .iter()
            .zip(routes)
            .map(|(raw, route)| record(state, conn.clone(), raw, route, replay)),
    )
    .await?;
    let records: Vec<String> = pushes
        .iter()
        .flat_map(|(written, _)| written.clone())
        .collect();
    state.confirm(&mut conn, &records).await?;
    let mut pipe = redis::pipe();
    let mut routed = 0;
    let mut queues = vec![keys::DEADLINES.to_owned()];
    for (raw, (_, push)) in batch.iter().zip(pushes) {
        let Some((cmd, targets)) = push else { continue };
        queue(&mut pipe, raw, &cmd, &targets);
        routed += targets.len();
        queues.extend(targets.iter().map(|a| keys::agent_queue(a)));
    }
    if routed > 0 {
        pipe.exec_async(&mut conn).await?;
        state.confirm(&mut conn, &queues).await?;
        state.metrics.routed(routed);
    }
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

/// Writes a command's job record, or its dead letter and `ERROR` answer; returns the keys whose
/// slots were written (for `WAIT`) and the agents whose queues the command goes to now, if any.
///
/// A command already recorded with the same text is a replay (its queues are pushed again:
/// the agent drops a job id it has seen) or, outside a replay, a client's retry of a push
/// whose acknowledgement it missed: dropped silently. Another command with a known id is
/// answered `duplicate id`.
async fn record(
    state: &Shared,
    mut conn: Conn,
    raw: &[u8],
    route: Route,
    replay: bool,
) -> redis::RedisResult<(Vec<String>, Option<(Command, Vec<String>)>)> {
    let (cmd, targets) = match route {
        Route::Fail {
            cmd: Some(cmd),
            reason,
            ..
        } => {
            // These very bytes were routed before (a plan can fail now that succeeded then: a
            // role without live agents, a revoked token): a replay goes on to the recorded
            // targets, a client's retry is dropped, and neither gets a second answer.
            let (recorded, targets): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
                .arg(keys::job(&cmd.id))
                .arg("cmd")
                .arg("targets")
                .query_async(&mut conn)
                .await?;
            let targets: Vec<String> = targets
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            if recorded.as_deref() == Some(raw) && !targets.is_empty() {
                let written = vec![keys::job(&cmd.id)];
                return Ok((written, replay.then_some((cmd, targets))));
            }
            let id = Some(cmd.id.clone());
            let written = vec![
                keys::DEAD.to_owned(),
                keys::job(&cmd.id),
                keys::results(&cmd.id),
            ];
            fail(state, &mut conn, raw, id, Some(&cmd), &reason).await?;
            return Ok((written, None));
        }
        Route::Fail { id, cmd, reason } => {
            let mut written = vec![keys::DEAD.to_owned()];
            if let Some(id) = id.as_deref() {
                written.extend([keys::job(id), keys::results(id)]);
            }
            fail(state, &mut conn, raw, id, cmd.as_ref(), &reason).await?;
            return Ok((written, None));
        }
        Route::To(cmd, targets) => (cmd, targets),
    };
    let mut written = vec![keys::job(&cmd.id)];
    let targets_json = serde_json::to_string(&targets).unwrap_or_else(|_| "[]".into());
    let created: i64 = state
        .scripts
        .create_job
        .key(keys::job(&cmd.id))
        .arg(raw)
        .arg(&targets_json)
        .arg(schemas::now_ms())
        .arg(state.config.result_ttl.as_secs())
        .invoke_async(&mut conn)
        .await?;
    let push = match (created, replay) {
        (1, _) => Some((cmd, targets)),
        // On a replay the record may name other targets (a role pick): keep the recorded ones.
        (0, true) => {
            let recorded = recorded_targets(&mut conn, &cmd.id).await?;
            Some((cmd, recorded.unwrap_or(targets)))
        }
        (0, false) => {
            tracing::debug!(id = cmd.id, "identical command pushed again; dropped");
            None
        }
        _ => {
            let id = Some(cmd.id.clone());
            fail(state, &mut conn, raw, id, Some(&cmd), "duplicate id").await?;
            written.extend([keys::DEAD.to_owned(), keys::results(&cmd.id)]);
            None
        }
    };
    Ok((written, push))
}

/// Adds to `pipe` the pushes of a command onto its agents' queues, its `max_wait` deadlines
/// and the `QUEUED` events that wake the agents' polls.
fn queue(pipe: &mut redis::Pipeline, raw: &[u8], cmd: &Command, targets: &[String]) {
    let max_wait = cmd.max_wait();
    for agent in targets {
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
}

async fn recorded_targets(conn: &mut Conn, id: &str) -> redis::RedisResult<Option<Vec<String>>> {
    let raw: Option<String> = redis::cmd("HGET")
        .arg(keys::job(id))
        .arg("targets")
        .query_async(conn)
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Dead-letters a command and, when its id is known, answers it with an `ERROR` result (once,
/// however often a replay gets here).
async fn fail(
    state: &Shared,
    conn: &mut Conn,
    raw: &[u8],
    id: Option<String>,
    cmd: Option<&Command>,
    reason: &str,
) -> redis::RedisResult<()> {
    let text = String::from_utf8_lossy(raw);
    let letter = json!({"raw": text, "reason": reason}).to_string();
    redis::pipe()
        .lpush(keys::DEAD, letter)
        .ignore()
        .ltrim(keys::DEAD, 0, state.config.dead_maxlen as isize - 1)
        .ignore()
        .exec_async(&mut *conn)
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
        .arg(raw)
        .arg(schemas::now_ms())
        .arg(state.config.result_ttl.as_secs())
        .invoke_async(&mut *conn)
        .await?;
    // One answer per distinct command text: a replay appends nothing more.
    let mark = format!("error|{}", hex::encode(Sha256::digest(raw)));
    crate::results::append(state, conn, &id, &mark, &result).await?;
    if created == 1 {
        let event = json!({"id": id, "gid": gid, "nid": nid, "state": "ERROR"}).to_string();
        redis::cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg(event)
            .query_async::<()>(&mut *conn)
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
