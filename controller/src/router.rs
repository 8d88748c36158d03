//! Routing (DESIGN §5.1): moves commands from `cmds_queue` into this instance's routing list,
//! validates them, writes `job:<id>`, pushes them onto their agents' queues, and only then
//! forgets them. A crash at any step loses nothing: the routing list is replayed (by this
//! instance after a Redis error, by another one after a crash) and a replay is recognised by
//! `job:<id>` holding the same command.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::future::join_all;
use rand::seq::IndexedRandom;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use schemas::{Command, JobEvent, JobState, Target};

use crate::backoff::{nap, Backoff};
use crate::redis_conn::Conn;
use crate::state::{AppState, Shared};
use crate::{agents, keys, rollout};

mod kept;
mod refused;

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

/// Runs the routing loop until `shutdown`, and runs it again if it stops or panics (a bug in
/// routing must not leave an instance that heartbeats but routes nothing).
pub async fn supervise(state: AppState, shutdown: CancellationToken) {
    let mut restarts = 0u32;
    loop {
        let outcome = tokio::spawn(run(state.clone(), shutdown.clone())).await;
        state.router.stopped();
        if shutdown.is_cancelled() {
            return;
        }
        restarts += 1;
        match outcome {
            Ok(()) => tracing::error!(restarts, "the router stopped; restarting it"),
            Err(e) => tracing::error!(error = %e, restarts, "the router panicked; restarting it"),
        }
        if !nap(Duration::from_secs(1), &shutdown).await {
            return;
        }
    }
}

/// Runs the routing loop until `shutdown`; Redis errors are retried with backoff.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut blocking = match state.redis.connect(Duration::from_secs(10)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "router cannot connect to redis");
            state.router.failed(&e);
            return;
        }
    };
    state.router.started();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut carry = Carry::default();
    while !shutdown.is_cancelled() {
        match step(&state, &mut blocking, &mut carry).await {
            Ok(()) => {
                state.router.stepped();
                backoff.reset();
            }
            Err(e) => {
                state.router.failed(&e);
                let pause = backoff.pause();
                tracing::warn!(error = %e, retry_in = ?pause, "routing step failed; the routing list will be replayed");
                nap(pause, &shutdown).await;
            }
        }
    }
    finish(&state, carry).await;
}

/// On a clean stop, routes what the last step took, which would otherwise wait in the routing
/// list for another instance to find this one gone; what cannot be routed stays for it.
async fn finish(state: &Shared, carry: Carry) {
    if carry.unsure || carry.taken.is_empty() {
        return;
    }
    let routing = keys::routing(&state.instance);
    let batch: Vec<(Vec<u8>, bool)> = carry.taken.into_iter().map(|raw| (raw, false)).collect();
    if let Err(e) = route_from(state, &routing, &batch).await {
        tracing::warn!(error = %e, commands = batch.len(),
            "cannot route the last commands taken; another instance will replay them");
    }
}

/// What one routing step leaves to the next.
#[derive(Debug)]
struct Carry {
    /// The routing list may hold commands that are not routed yet (a step failed or stopped
    /// short, or this is the first step): the next step reads the list whole and replays it.
    unsure: bool,
    /// The commands the last step moved from `cmds_queue` into the routing list, in the round
    /// trip that took its own off it: the next step routes them without asking Redis again.
    taken: Vec<Vec<u8>>,
}

impl Default for Carry {
    fn default() -> Carry {
        Carry {
            unsure: true,
            taken: Vec::new(),
        }
    }
}

/// One routing step: a batch, routed together; each command is taken off the routing list once
/// its writes are confirmed. Commands that could not be confirmed (a shard or primary without
/// a replica) stay for the next step, without holding up the others.
///
/// The batch is what a failed step left in the routing list (replayed), else what the last step
/// took, else the next command `cmds_queue` gets (waiting up to 1 s for it). A step that routes
/// its whole batch takes the next batch in the same round trip as its removals, so a busy
/// router spends three round trips a batch: records, queues, removals with the next take.
async fn step(state: &Shared, blocking: &mut Conn, carry: &mut Carry) -> redis::RedisResult<()> {
    let routing = keys::routing(&state.instance);
    let mut conn = state.conn();
    let unsure = std::mem::replace(&mut carry.unsure, true);
    let mut batch: Vec<(Vec<u8>, bool)> = if unsure {
        carry.taken.clear();
        let mut leftover: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&routing)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        leftover.reverse(); // oldest first
        leftover.into_iter().map(|raw| (raw, true)).collect()
    } else {
        std::mem::take(&mut carry.taken)
            .into_iter()
            .map(|raw| (raw, false))
            .collect()
    };
    if batch.is_empty() {
        let first: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(keys::CMDS_QUEUE)
            .arg(&routing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(1.0)
            .query_async(blocking)
            .await?;
        let Some(first) = first else {
            carry.unsure = false;
            return Ok(());
        };
        batch.push((first, false));
    }
    let more = state.config.route_batch.saturating_sub(batch.len());
    if unsure && more > 0 {
        let taken: Vec<Vec<u8>> = state
            .scripts
            .take_batch
            .key(keys::CMDS_QUEUE)
            .key(&routing)
            .arg(more)
            .invoke_async(&mut conn)
            .await?;
        batch.extend(taken.into_iter().map(|raw| (raw, false)));
    }
    let (done, taken) = settle_and_take(state, &routing, &batch, state.config.route_batch).await?;
    if done < batch.len() {
        return Err(crate::redis_conn::not_replicated(
            state.config.wait_replicas,
        ));
    }
    *carry = Carry {
        unsure: false,
        taken,
    };
    Ok(())
}

/// What became of one command of a batch.
#[derive(Debug)]
pub enum Settled {
    /// Routed (or answered) and its writes confirmed: it may leave its routing list.
    Done,
    /// Not confirmed yet, or Redis is out: it stays to be routed again.
    Later,
    /// Redis refused one of its writes; it stays, and is dead-lettered when this keeps happening
    /// with an error that is not an outage (see [`is_persistent`]).
    Failed(redis::RedisError),
}

/// Routes a batch taken from the routing list `list` ([`route_batch`]) and takes what is done
/// off the list: one copy each (an identical copy that was not routed stays), and nothing else
/// (an instance that was only frozen may have added more since). A command Redis keeps
/// refusing is dead-lettered after `--route-tries` tries and taken off too, so it cannot hold
/// up the others. Returns how many are done.
pub async fn route_from(
    state: &Shared,
    list: &str,
    batch: &[(Vec<u8>, bool)],
) -> redis::RedisResult<usize> {
    Ok(settle_and_take(state, list, batch, 0).await?.0)
}

/// [`route_from`], and when the whole batch is done, up to `take` more commands moved from
/// `cmds_queue` onto `list` in the same round trip as the removals; returns how many are done
/// and the commands taken.
async fn settle_and_take(
    state: &Shared,
    list: &str,
    batch: &[(Vec<u8>, bool)],
    take: usize,
) -> redis::RedisResult<(usize, Vec<Vec<u8>>)> {
    let settled = route_batch(state, batch).await?;
    let mut pipe = redis::pipe();
    let mut done = 0;
    for ((raw, _), settled) in batch.iter().zip(settled) {
        let finished = match settled {
            Settled::Done => true,
            Settled::Later => false,
            Settled::Failed(e) if is_persistent(&e) => {
                let tries = state.poison.tried(raw);
                if tries >= state.config.route_tries {
                    quarantine(state, raw, &e, tries).await;
                    true
                } else {
                    tracing::warn!(error = %e, tries, "redis refused a command's writes; it will be tried again");
                    false
                }
            }
            Settled::Failed(_) => false,
        };
        if finished {
            state.poison.forget(raw);
            pipe.lrem(list, 1, raw).ignore();
            done += 1;
        }
    }
    if take == 0 || done < batch.len() {
        if done > 0 {
            pipe.exec_async(&mut state.conn()).await?;
        }
        return Ok((done, Vec::new()));
    }
    // Concurrently, so the multiplexed connection sends both in one round trip, removals first
    // (the script is loaded again, should Redis have lost it).
    let mut take_more = state.scripts.take_batch.key(keys::CMDS_QUEUE);
    take_more.key(list).arg(take);
    let (removed, taken) =
        futures::future::join(async { pipe.exec_async(&mut state.conn()).await }, async {
            take_more
                .invoke_async::<Vec<Vec<u8>>>(&mut state.conn())
                .await
        })
        .await;
    removed?;
    Ok((done, taken?))
}

/// Whether Redis refused a write for a reason that retrying will not change (a key of the wrong
/// type, a script error, a value over its limits, a missing permission), as opposed to an outage,
/// a failover, a full memory or a replica that did not confirm in time.
pub fn is_persistent(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if crate::redis_conn::is_not_replicated(e) {
        return false;
    }
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::ResponseError
            | ServerErrorKind::ExecAbort
            | ServerErrorKind::CrossSlot
            | ServerErrorKind::NoPerm,
        ) => !transient_code(e),
        ErrorKind::Extension | ErrorKind::UnexpectedReturnType => !transient_code(e),
        _ => false,
    }
}

/// Error codes that say "not now" rather than "never".
fn transient_code(e: &redis::RedisError) -> bool {
    matches!(
        e.code(),
        Some("OOM" | "BUSY" | "MISCONF" | "NOREPLICAS" | "LOADING" | "TRYAGAIN" | "MASTERDOWN")
    )
}

/// Gives up on a command Redis keeps refusing: a (size-capped) dead letter saying why, and an
/// `ERROR` answer naming its agent when its id can be read; each may fail too (the same key may
/// be what Redis refuses), which is logged. It then leaves the routing list.
async fn quarantine(state: &Shared, raw: &[u8], e: &redis::RedisError, tries: u32) {
    let (id, cmd) = match Command::parse(raw) {
        Ok((cmd, _)) => (Some(cmd.id.clone()), Some(cmd)),
        Err((id, _)) => (id, None),
    };
    let reason = format!("redis refused this command's writes {tries} times: {e}");
    tracing::error!(
        id = id.as_deref().unwrap_or("-"),
        error = %e,
        "dead-lettering a command redis keeps refusing"
    );
    let mut conn = state.conn();
    if let Err(e) = dead_letter(state, &mut conn, raw, &reason).await {
        tracing::error!(id = id.as_deref().unwrap_or("-"), error = %e, head = %String::from_utf8_lossy(&raw[..raw.len().min(1024)]),
            "cannot dead-letter the command either; it is dropped (its start is logged here)");
    }
    let Some(id) = id else { return };
    let result = refused::error_result(&id, raw, cmd.as_ref(), &reason);
    let result = serde_json::to_string(&result).unwrap_or_default();
    let mark = format!("error|{}", hex::encode(Sha256::digest(raw)));
    if let Err(e) = crate::results::append(state, &mut conn, &id, &mark, &result, None).await {
        tracing::error!(id, error = %e, "cannot write the ERROR answer of a dead-lettered command");
    }
    state.metrics.finished("ERROR");
}

/// Routes a batch of raw commands, each with whether it is a replay (it comes from a routing
/// list, and may have been partly routed already), and says what became of each.
///
/// Two phases, each confirmed by `WAIT` when replicas are asked for: the job records first
/// (so no agent can run a command whose record a failover could lose: on a cluster they are in
/// other slots than the agents' queues), then the agents' queues. Each command is written on
/// its own, so one that Redis refuses (or a shard that is down) holds up only itself.
pub async fn route_batch(
    state: &Shared,
    batch: &[(Vec<u8>, bool)],
) -> redis::RedisResult<Vec<Settled>> {
    let mut role_cache: HashMap<(u64, String), Vec<String>> = HashMap::new();
    let mut routes = Vec::with_capacity(batch.len());
    for (raw, _) in batch {
        routes.push(plan(state, raw, &mut role_cache).await);
    }
    let mut conn = state.durable().await?;
    let records: Vec<Result<_, redis::RedisError>> =
        join_all(batch.iter().zip(routes).map(|((raw, replay), route)| {
            let conn = conn.clone();
            async move { record(state, conn, raw, route?, *replay).await }
        }))
        .await;
    let writes: Vec<Vec<String>> = records
        .iter()
        .map(|r| r.as_ref().map(|(w, _)| w.clone()).unwrap_or_default())
        .collect();
    let confirmed = state.confirm_each(&mut conn, &writes).await?;
    let mut settled: Vec<Settled> = Vec::with_capacity(batch.len());
    let mut queued = Vec::new();
    let mut histories = BTreeSet::new();
    for (i, ((raw, _), (record, ok))) in batch
        .iter()
        .zip(records.into_iter().zip(confirmed))
        .enumerate()
    {
        match record {
            Err(e) => settled.push(Settled::Failed(e)),
            Ok(_) if !ok => settled.push(Settled::Later),
            Ok((_, None)) => settled.push(Settled::Done),
            Ok((_, Some((cmd, targets)))) => {
                settled.push(Settled::Later); // until its queues are confirmed below
                let mut pipe = redis::pipe();
                queue(&mut pipe, raw, &cmd, &targets, &mut histories);
                let mut written: Vec<String> =
                    targets.iter().map(|a| keys::agent_queue(a)).collect();
                if cmd.max_wait() > 0 {
                    written.push(keys::DEADLINES.to_owned());
                }
                if cmd.rollout().is_some() {
                    rollout::track(&mut pipe, &cmd.id, schemas::now_ms());
                    written.push(keys::ROLLOUTS.to_owned());
                }
                queued.push((i, pipe, written, targets.len()));
            }
        }
    }
    // The histories are bounded in the same round trip as the pushes. They are an index, not
    // the record: should this fail, the next batch bounds them.
    let mut bounds = redis::pipe();
    bound(&mut bounds, &histories, state.config.result_ttl);
    let (pushed, bounded) = futures::future::join(
        join_all(queued.iter().map(|(_, pipe, _, _)| {
            let mut conn = conn.clone();
            async move { pipe.exec_async(&mut conn).await }
        })),
        async {
            if histories.is_empty() {
                return Ok(());
            }
            bounds.exec_async(&mut conn.clone()).await
        },
    )
    .await;
    if let Err(e) = bounded {
        tracing::warn!(error = %e, "cannot bound the job histories; the next batch will");
    }
    let writes: Vec<Vec<String>> = queued.iter().map(|(_, _, w, _)| w.clone()).collect();
    let confirmed = state.confirm_each(&mut conn, &writes).await?;
    let mut routed = 0;
    for (((i, _, _, targets), pushed), ok) in queued.into_iter().zip(pushed).zip(confirmed) {
        settled[i] = match pushed {
            Err(e) => Settled::Failed(e),
            Ok(()) if ok => {
                routed += targets;
                Settled::Done
            }
            Ok(()) => Settled::Later,
        };
    }
    state.metrics.routed(routed);
    // Nothing got through because Redis is out: say why (the step is retried with backoff).
    let outage = settled
        .iter()
        .all(|s| matches!(s, Settled::Failed(e) if !is_persistent(e)));
    if outage {
        if let Some(Settled::Failed(e)) = settled.into_iter().next() {
            return Err(e);
        }
        return Ok(vec![]);
    }
    Ok(settled)
}

/// Validates a command and finds its agents.
async fn plan(
    state: &Shared,
    raw: &[u8],
    role_cache: &mut HashMap<(u64, String), Vec<String>>,
) -> redis::RedisResult<Route> {
    if raw.len() > state.config.max_command {
        // Not stored in a job record nor echoed in its answer: only its id is read here (the
        // answer names its agent and cmd, read field by field: `refused`).
        let id = id_of(raw);
        let reason = format!(
            "command of {} bytes is over the limit of {} bytes (--max-command)",
            raw.len(),
            state.config.max_command
        );
        return Ok(Route::Fail {
            id,
            cmd: None,
            reason,
        });
    }
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
    if crate::config_jobs::is_reserved(&cmd.id) {
        return Ok(fail(cmd, crate::config_jobs::RESERVED.to_owned()));
    }
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
    let (mut cmd, targets) = match route {
        Route::Fail {
            cmd: Some(cmd),
            reason,
            ..
        } => {
            // These very bytes were routed before (a plan can fail now that succeeded then: a
            // role without live agents, a revoked token): a replay goes on to the recorded
            // targets, a client's retry is dropped, and neither gets a second answer.
            let (recorded, targets, released, digest): (
                Option<Vec<u8>>,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = redis::cmd("HMGET")
                .arg(keys::job(&cmd.id))
                .arg("cmd")
                .arg("targets")
                .arg("released")
                .arg("digest")
                .query_async(&mut conn)
                .await?;
            let targets: Vec<String> = targets
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let targets = rollout::pushed(targets, released.as_deref());
            if kept::same(raw, recorded.as_deref(), digest.as_deref()) && !targets.is_empty() {
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
    if let Some(reason) = rollout::outlives(&cmd, targets.len(), state.config.result_ttl) {
        let id = Some(cmd.id.clone());
        let written = vec![
            keys::DEAD.to_owned(),
            keys::job(&cmd.id),
            keys::results(&cmd.id),
        ];
        fail(state, &mut conn, raw, id, Some(&cmd), &reason).await?;
        return Ok((written, None));
    }
    let mut written = vec![keys::job(&cmd.id)];
    let mut targets = targets;
    // A rollout is recorded with all its targets (sorted) and pushed to its first batch.
    let rollout = rollout::first_batch(&cmd, &mut targets);
    let kept = kept::kept(raw, &mut cmd, rollout.is_some());
    let targets_json = serde_json::to_string(&targets).unwrap_or_else(|_| "[]".into());
    let mut create = state.scripts.create_job.key(keys::job(&cmd.id));
    create
        .arg(&kept.text)
        .arg(&targets_json)
        .arg(schemas::now_ms())
        .arg(state.config.result_ttl.as_secs())
        .arg(submitter(Some(&cmd)))
        .arg(kept.digest.as_deref().unwrap_or(""));
    if let Some(bytes) = kept.omitted {
        create.arg("data_omitted").arg(bytes);
    }
    if let Some((fields, first)) = &rollout {
        for (field, value) in fields {
            create.arg(field).arg(value);
        }
        targets.truncate(*first);
    }
    let created: i64 = create.invoke_async(&mut conn).await?;
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
    if let Some((cmd, _)) = &push {
        stop_killed_rollout(state, cmd).await?;
    }
    Ok((written, push))
}

/// A `kill` of a job that is a running rollout (sent by `jsctl kill`, `Job.kill()`, or the
/// controller's own kill path) stops the rollout: its agents not released yet end `KILLED`,
/// rather than be sent the job after they were sent its kill. Idempotent, so a replay repeats it.
async fn stop_killed_rollout(state: &Shared, cmd: &Command) -> redis::RedisResult<()> {
    if cmd.cmd != "kill" {
        return Ok(());
    }
    match cmd.args.get("id").and_then(Value::as_str) {
        Some(id) => rollout::kill(state, id).await.map(|_| ()),
        None => Ok(()),
    }
}

/// Adds to `pipe` the pushes of a command onto its agents' queues, its `max_wait` deadlines,
/// its entries in the job history and the `QUEUED` events that wake the agents' polls.
/// The job histories are added to here and bounded once a batch, for all its commands: the keys
/// to bound go into `histories`.
fn queue(
    pipe: &mut redis::Pipeline,
    raw: &[u8],
    cmd: &Command,
    targets: &[String],
    histories: &mut BTreeSet<String>,
) {
    let mut history = vec![keys::JOBS_ALL.to_owned()];
    history.extend(targets.iter().map(|a| keys::jobs_of_agent(a)));
    let (domain, name) = (cmd.args.get("domain"), cmd.args.get("name"));
    if let (Some(Value::String(domain)), Some(Value::String(name))) = (domain, name) {
        if !name.is_empty() {
            history.push(keys::jobs_named(domain, name));
        }
    }
    add(pipe, &history, &cmd.id);
    histories.extend(history);
    let now = schemas::now_ms();
    for agent in targets {
        push(pipe, raw, cmd, agent, now);
    }
}

/// Adds to `pipe` the push of a command onto one agent's queue, its `max_wait` deadline (from
/// `now`, ms) and the `QUEUED` event that wakes the agent's poll. The router's and a rollout's
/// batches are pushed alike.
pub fn push(
    pipe: &mut redis::Pipeline,
    raw: impl redis::ToRedisArgs,
    cmd: &Command,
    agent: &str,
    now: u64,
) {
    pipe.lpush(keys::agent_queue(agent), raw).ignore();
    let max_wait = cmd.max_wait();
    if max_wait > 0 {
        pipe.zadd(
            keys::DEADLINES,
            format!("{agent}|{}", cmd.id),
            now + max_wait * 1000,
        )
        .ignore();
    }
    let (gid, nid) = keys::split_agent(agent);
    let event = JobEvent {
        id: cmd.id.clone(),
        gid,
        nid,
        state: JobState::Queued,
    };
    pipe.publish(keys::EVENTS, event.to_json()).ignore();
}

/// The targets a recorded job was pushed to (of a rollout, the batches released so far).
async fn recorded_targets(conn: &mut Conn, id: &str) -> redis::RedisResult<Option<Vec<String>>> {
    let (raw, released): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(keys::job(id))
        .arg("targets")
        .arg("released")
        .query_async(conn)
        .await?;
    let targets = raw.and_then(|r| serde_json::from_str(&r).ok());
    Ok(targets.map(|t| rollout::pushed(t, released.as_deref())))
}

/// Who submitted `cmd`, for its record: its `submitted_by` (at most [`SUBMITTER_MAX`] bytes),
/// else "redis" (pushed straight into `cmds_queue`).
fn submitter(cmd: Option<&Command>) -> String {
    let given = cmd.and_then(|c| c.submitted_by.as_deref()).map(str::trim);
    match given.filter(|s| !s.is_empty()) {
        Some(s) => s.chars().take(SUBMITTER_MAX).collect(),
        None => "redis".to_owned(),
    }
}

/// Longest `submitted_by` kept, in characters.
const SUBMITTER_MAX: usize = 128;

/// Most jobs one history keeps (its oldest go first): at ~100 bytes each, a history is at most
/// about 20 MB of Redis memory whatever the job rate and `--result-ttl`.
pub const HISTORY_MAX: isize = 200_000;

/// Adds `id` to the job histories `keys`, routed now, and bounds them ([`bound`]).
pub fn index(pipe: &mut redis::Pipeline, keys: &[String], id: &str, ttl: Duration) {
    add(pipe, keys, id);
    bound(pipe, keys, ttl);
}

/// Adds `id` to the job histories `keys`, routed now.
fn add(pipe: &mut redis::Pipeline, keys: &[String], id: &str) {
    let now = schemas::now_ms();
    for key in keys {
        pipe.zadd(key, id, now).ignore();
    }
}

/// Drops from the job histories `keys` what expired with its job (`--result-ttl`) and what is
/// over [`HISTORY_MAX`], and keeps them as long as their newest job.
pub fn bound<'a>(
    pipe: &mut redis::Pipeline,
    keys: impl IntoIterator<Item = &'a String>,
    ttl: Duration,
) {
    let expired = schemas::now_ms().saturating_sub(ttl.as_millis() as u64);
    for key in keys {
        pipe.zrembyscore(key, "-inf", format!("({expired}"))
            .ignore();
        pipe.zremrangebyrank(key, 0, -(HISTORY_MAX + 1)).ignore();
        pipe.expire(key, ttl.as_secs() as i64).ignore();
    }
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
    dead_letter(state, conn, raw, reason).await?;
    tracing::debug!(
        id = id.as_deref().unwrap_or("-"),
        reason,
        "command dead-lettered"
    );
    let Some(id) = id else { return Ok(()) };
    let result = refused::error_result(&id, raw, cmd, reason);
    let (gid, nid) = (result.gid, result.nid);
    let result = serde_json::to_string(&result).unwrap_or_default();
    let created: i64 = state
        .scripts
        .fail_job
        .key(keys::job(&id))
        .arg(&raw[..raw.len().min(LETTER_RAW_MAX)])
        .arg(schemas::now_ms())
        .arg(state.config.result_ttl.as_secs())
        .arg(submitter(cmd))
        .invoke_async(&mut *conn)
        .await?;
    if created == 1 {
        let mut pipe = redis::pipe();
        index(
            &mut pipe,
            &[keys::JOBS_ALL.to_owned()],
            &id,
            state.config.result_ttl,
        );
        pipe.exec_async(&mut *conn).await?;
    }
    // One answer per distinct command text: a replay appends nothing more.
    let mark = format!("error|{}", hex::encode(Sha256::digest(raw)));
    crate::results::append(state, conn, &id, &mark, &result, None).await?;
    if created == 1 {
        let event = JobEvent {
            id: id.clone(),
            gid,
            nid,
            state: JobState::Error,
        }
        .to_json();
        redis::cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg(event)
            .query_async::<()>(&mut *conn)
            .await?;
    }
    state.metrics.finished("ERROR");
    Ok(())
}

/// The id of a raw command, when one can be read (valid or not).
fn id_of(raw: &[u8]) -> Option<String> {
    Command::parse(raw).map_or_else(|(id, _)| id, |(c, _)| Some(c.id))
}

/// Most bytes of a command kept in its dead letter, job record or answer: a letter always fits
/// Redis's limits, however large the command was.
pub const LETTER_RAW_MAX: usize = 64 << 10;

/// Pushes a dead letter `{"raw", "reason"}` (with `"truncated": <bytes>` when the command was
/// longer than [`LETTER_RAW_MAX`]) onto the capped `cmds_queue:dead`.
async fn dead_letter(
    state: &Shared,
    conn: &mut Conn,
    raw: &[u8],
    reason: &str,
) -> redis::RedisResult<()> {
    let kept = &raw[..raw.len().min(LETTER_RAW_MAX)];
    let text = String::from_utf8_lossy(kept);
    let mut letter = json!({"raw": text, "reason": reason});
    if kept.len() < raw.len() {
        letter["truncated"] = json!(raw.len());
    }
    redis::pipe()
        .lpush(keys::DEAD, letter.to_string())
        .ignore()
        .ltrim(keys::DEAD, 0, state.config.dead_maxlen as isize - 1)
        .ignore()
        .exec_async(&mut *conn)
        .await?;
    state.metrics.dead_lettered();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(kind: redis::ServerErrorKind, detail: &str) -> redis::RedisError {
        redis::RedisError::from((
            redis::ErrorKind::Server(kind),
            "server error",
            detail.into(),
        ))
    }

    #[test]
    fn refusals_that_retrying_cannot_change_are_persistent() {
        let wrongtype = redis::make_extension_error(
            "WRONGTYPE".into(),
            Some("Operation against a key holding the wrong kind of value".into()),
        );
        assert!(is_persistent(&wrongtype));
        let bulk = server_error(
            redis::ServerErrorKind::ResponseError,
            "Protocol error: invalid bulk length",
        );
        assert!(is_persistent(&bulk));
        assert!(is_persistent(&server_error(
            redis::ServerErrorKind::NoPerm,
            "no permission"
        )));
    }

    #[test]
    fn outages_failovers_and_full_memory_are_not() {
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!is_persistent(&io));
        for kind in [
            redis::ServerErrorKind::ReadOnly,
            redis::ServerErrorKind::MasterDown,
            redis::ServerErrorKind::TryAgain,
            redis::ServerErrorKind::ClusterDown,
            redis::ServerErrorKind::BusyLoading,
        ] {
            assert!(!is_persistent(&server_error(kind, "x")), "{kind:?}");
        }
        for code in ["OOM", "BUSY", "MISCONF", "NOREPLICAS"] {
            let e = redis::make_extension_error(code.into(), Some("not now".into()));
            assert!(!is_persistent(&e), "{code}");
        }
        assert!(!is_persistent(&crate::redis_conn::not_replicated(1)));
    }
}
