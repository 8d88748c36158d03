//! Rollouts (issue 14): a fanout command with `batch` is recorded with all its targets (sorted)
//! but pushed to the first batch only ([`first_batch`], by the router); a sweeper that every
//! instance runs ([`run`]) releases the next batch once every released target has a final
//! result and `batch_wait` seconds have passed, and, when more than `max_failures` of them
//! failed, ends every target not released yet `ERROR` ("rollout stopped: …") through the
//! normal result path, so `cmds_queue_<id>` still gets one result per target. A kill
//! ([`kill`]) ends them `KILLED`. A rollout of a job that never ends is refused by
//! `Command::parse`, one whose waits outlast the result TTL by the router ([`outlives`]).
//! Redis only.
//!
//! The job record (`job:<id>`) holds the rollout: `rollout` (the [`Plan`] as JSON), `released`
//! (how many of the sorted targets were pushed), `failed` (how many of those ended other than
//! `OK`), `batch_done` (when the sweep saw the running batch complete, ms), `stopped` and
//! `stop_state` (why, and in what state, the targets not released end). Active rollouts are
//! the members of `{cmds_queue}:rollouts`, scored by when to look at them next; a result of a
//! rollout brings its look forward ([`results`]).
//!
//! Crashes and concurrent sweepers: a sweeper claims a due rollout first
//! (`rollout_claim.lua`: a lease of [`LEASE`] in `{cmds_queue}:rollouts:leases`), so one
//! instance drives a rollout at a time, and another takes it over when a dead one's lease ends.
//! `rollout_step.lua` only decides (and records the intent `releasing` of a batch it decides
//! to release); the sweeper pushes the batch, waits for replicas, and only then marks it
//! released with a compare-and-set (`rollout_mark.lua`, which clears `releasing`).
//! Push-then-mark: a crash between the two leaves the batch unmarked, and the next sweep pushes
//! it again, so no batch is lost; a batch pushed twice (that replay, or a lease that ended
//! mid-step) runs once because an agent drops a job id it has seen, and the compare-and-set
//! lets one sweeper mark it. A kill that stops the rollout between a push and its mark leaves
//! `releasing` set: the next step kills the job on that batch (`Step::Unrelease`), whose
//! agents the stop ends `KILLED`. A kill only marks the rollout stopped and prompts the
//! sweeper, which ends the targets. Each step renews the job record and its results to the
//! result TTL. `job:<id>` and the agents' queues are in different cluster slots, so each step
//! is a single-slot script or command.
//!
//! Time: the verdicts take `now` as an argument ([`sweep`]), so the tests drive the clock.

use std::time::Duration;

use schemas::{Command, JobResult, JobState, Plan};
use tokio_util::sync::CancellationToken;

use crate::state::{AppState, Shared};
use crate::{keys, results, router};

/// How often the sweeper looks for rollouts that are due.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// While a batch runs, how long until the sweeper looks again unprompted. A result prompts it
/// sooner ([`prompt`]); this bounds the delay when a prompt is lost (a crash, or a sweep that
/// was deciding when it came and then set the next look).
const RECHECK: Duration = Duration::from_secs(2);
/// Rollouts looked at per sweep, at most.
const SWEEP_MAX: isize = 100;
/// How long a sweeper holds a rollout it claimed ([`sweep`]); another instance takes it over
/// after this when the holder died. Longer than a step takes (a batch's push and `WAIT`).
const LEASE: Duration = Duration::from_secs(60);
/// Targets ended at once when a rollout stops (their results recorded concurrently, then one
/// `WAIT`).
const END_CHUNK: usize = 64;
/// The reason of the targets not released when a kill stopped the rollout: a `kill` sent to
/// any one agent of the job (or `DELETE /v1/jobs/{id}`) stops the whole rollout.
pub const KILLED_REASON: &str = "rollout killed: kill sent for the job";

/// Why a rollout of `cmd` to `targets` targets is refused: its waits between batches alone
/// outlast `result_ttl`, the life of its job record and results past their last write.
pub fn outlives(cmd: &Command, targets: usize, result_ttl: Duration) -> Option<String> {
    let plan = cmd.rollout()?.plan(targets);
    let batches = targets.div_ceil(plan.batch.max(1)) as u64;
    let waits = plan.batch_wait.saturating_mul(batches.saturating_sub(1));
    let ttl = result_ttl.as_secs();
    (waits > ttl).then(|| {
        format!(
            "batch_wait: {} s between {batches} batches is {waits} s of waiting, over the result \
             TTL ({ttl} s) that keeps the job's record: shorten batch_wait or make batches larger",
            plan.batch_wait
        )
    })
}

/// The job record fields of a new rollout of `cmd` to `targets` (sorted here), and how many of
/// them the router pushes now; `None` when `cmd` is not a rollout.
pub fn first_batch(
    cmd: &Command,
    targets: &mut [String],
) -> Option<(Vec<(String, String)>, usize)> {
    let rollout = cmd.rollout()?;
    targets.sort_by_key(|a| keys::split_agent(a));
    let plan = rollout.plan(targets.len());
    let first = plan.batch.min(targets.len());
    let plan = serde_json::to_string(&plan).expect("a plan serializes");
    let fields = vec![
        ("rollout".to_owned(), plan),
        ("released".to_owned(), first.to_string()),
        ("failed".to_owned(), "0".to_owned()),
    ];
    Some((fields, first))
}

/// Of a job's recorded `targets`, those pushed so far: all of them unless the job is a rollout
/// (`released` is the `released` field).
pub fn pushed(mut targets: Vec<String>, released: Option<&str>) -> Vec<String> {
    if let Some(n) = released.and_then(|r| r.parse::<usize>().ok()) {
        targets.truncate(n);
    }
    targets
}

/// Runs the sweeper until `shutdown`; errors are logged and the rollout is looked at again.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = sweep(&state, schemas::now_ms()).await {
                    tracing::warn!(error = %e, "rollout sweep failed; will retry");
                }
            }
        }
    }
}

/// What `rollout_step.lua` decided.
#[derive(Debug, PartialEq)]
enum Step {
    Done,
    Wait(u64),
    Release(usize, usize),
    Unrelease(usize, usize),
    Stop {
        released: usize,
        reason: String,
        state: JobState,
    },
}

/// Looks at every rollout due at `now` (ms) that no other instance holds, claims it (a lease
/// of [`LEASE`]) and does what it needs, so each rollout is driven by one instance at a time.
pub async fn sweep(state: &Shared, now: u64) -> redis::RedisResult<()> {
    let token = now + LEASE.as_millis() as u64;
    let claimed: Vec<String> = state
        .scripts
        .rollout_claim
        .key(keys::ROLLOUTS)
        .key(keys::ROLLOUT_LEASES)
        .arg(now)
        .arg(LEASE.as_millis() as u64)
        .arg(SWEEP_MAX)
        .invoke_async(&mut state.conn())
        .await?;
    for id in claimed {
        let next = match drive(state, &id, now).await {
            Ok(next) => next.map(|at| at.max(now)),
            Err(e) => {
                tracing::warn!(id, error = %e, "rollout step failed; will retry");
                Some(now)
            }
        };
        let unclaimed = state
            .scripts
            .rollout_unclaim
            .key(keys::ROLLOUTS)
            .key(keys::ROLLOUT_LEASES)
            .arg(&id)
            .arg(token)
            .arg(next.map(|at| at.to_string()).unwrap_or_default())
            .invoke_async::<()>(&mut state.conn())
            .await;
        if let Err(e) = unclaimed {
            tracing::warn!(id, error = %e, "rollout lease not released; it ends by itself");
        }
    }
    Ok(())
}

/// One step of rollout `id`; when to look at it next (ms), `None` when it is done.
#[tracing::instrument(skip(state, now), level = "debug")]
async fn drive(state: &Shared, id: &str, now: u64) -> redis::RedisResult<Option<u64>> {
    let step = decide(state, id, now).await?;
    if step == Step::Done {
        return Ok(None);
    }
    renew(state, id).await?;
    let next = match step {
        Step::Done => return Ok(None),
        Step::Wait(at) => at,
        Step::Release(from, to) => {
            release(state, id, from, to).await?;
            now // look again soon: the batch may be empty of work (all answered at once)
        }
        Step::Unrelease(from, to) => {
            unrelease(state, id, from, to).await?;
            now
        }
        Step::Stop {
            released,
            reason,
            state: end,
        } => {
            end_unreleased(state, id, released, &reason, end).await?;
            now
        }
    };
    Ok(Some(next))
}

/// Renews the result list of rollout `id` (and its marks) to the result TTL, as each step
/// renews the job record (`rollout_step.lua`): a slow rollout outlives its last write.
async fn renew(state: &Shared, id: &str) -> redis::RedisResult<()> {
    let ttl = state.config.result_ttl.as_secs();
    let mut pipe = redis::pipe();
    pipe.expire(keys::results(id), ttl as i64).ignore();
    if let Some(marks) = keys::appended(id) {
        pipe.expire(marks, ttl as i64).ignore();
    }
    pipe.exec_async(&mut state.conn()).await
}

/// Rollout `id` was stopped while targets `from..to` were being pushed (a sweeper died, or was
/// slower than the kill, between its push and its mark): they may get the job, which they were
/// answered `KILLED` for, so it is killed there; then the intent is cleared.
async fn unrelease(state: &Shared, id: &str, from: usize, to: usize) -> redis::RedisResult<()> {
    let Some((_, targets)) = command_of(state, id).await? else {
        return Ok(());
    };
    let batch = &targets[from.min(targets.len())..to.min(targets.len())];
    tracing::info!(
        id,
        from,
        to,
        "rollout killed while a batch was pushed; killing it there"
    );
    for agent in batch {
        kill_there(state, id, agent).await?;
    }
    redis::cmd("HDEL")
        .arg(keys::job(id))
        .arg("releasing")
        .query_async(&mut state.conn())
        .await
}

async fn decide(state: &Shared, id: &str, now: u64) -> redis::RedisResult<Step> {
    let reply: Vec<String> = state
        .scripts
        .rollout_step
        .key(keys::job(id))
        .arg(now)
        .arg(RECHECK.as_millis() as u64)
        .arg(state.config.result_ttl.as_secs())
        .invoke_async(&mut state.conn())
        .await?;
    let number = |i: usize| {
        reply
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(match reply.first().map(String::as_str) {
        Some("wait") => Step::Wait(number(1)),
        Some("release") => Step::Release(number(1) as usize, number(2) as usize),
        Some("unrelease") => Step::Unrelease(number(1) as usize, number(2) as usize),
        Some("stop") => Step::Stop {
            released: number(1) as usize,
            reason: reply.get(2).cloned().unwrap_or_default(),
            state: reply
                .get(3)
                .and_then(|s| JobState::parse(s))
                .unwrap_or(JobState::Error),
        },
        _ => Step::Done,
    })
}

/// A job's command (raw, as queued) and its targets.
async fn command_of(state: &Shared, id: &str) -> redis::RedisResult<Option<(String, Vec<String>)>> {
    let (raw, targets): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(keys::job(id))
        .arg("cmd")
        .arg("targets")
        .query_async(&mut state.conn())
        .await?;
    let targets = targets.and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok());
    Ok(raw.zip(targets))
}

/// Pushes targets `from..to` (0-based, of the sorted targets) of rollout `id`, waits for
/// replicas, then marks them released (once, whichever sweeper gets there first).
async fn release(state: &Shared, id: &str, from: usize, to: usize) -> redis::RedisResult<()> {
    let Some((raw, targets)) = command_of(state, id).await? else {
        return Ok(());
    };
    let batch = &targets[from.min(targets.len())..to.min(targets.len())];
    let Ok(cmd) = serde_json::from_str::<Command>(&raw) else {
        return Ok(());
    };
    let (pipe, written) = push_batch(state, &cmd, &raw, batch);
    let mut durable = state.durable().await?;
    pipe.exec_async(&mut durable).await?;
    state.confirm(&mut durable, &written).await?;
    let marked: i64 = state
        .scripts
        .rollout_mark
        .key(keys::job(id))
        .arg(from)
        .arg(to)
        .invoke_async(&mut durable)
        .await?;
    // 0: another sweeper marked it. -1: killed between this push and its mark; the batch's
    // `releasing` intent stays, and the next step kills the job there (`Step::Unrelease`), as
    // it does after a crash here.
    if marked == 1 {
        state.metrics.routed(batch.len());
        tracing::info!(id, from, to, of = targets.len(), "rollout: batch released");
    }
    Ok(())
}

/// The pushes of `cmd` (`raw`) onto the queues of `batch`, their `max_wait` deadlines (counted
/// from now, the release), history entries and the `QUEUED` events that wake the agents'
/// polls; and the keys written (for `WAIT`).
fn push_batch(
    state: &Shared,
    cmd: &Command,
    raw: &str,
    batch: &[String],
) -> (redis::Pipeline, Vec<String>) {
    let mut pipe = redis::pipe();
    let mut written: Vec<String> = batch.iter().map(|a| keys::agent_queue(a)).collect();
    let now = schemas::now_ms();
    for agent in batch {
        router::push(&mut pipe, raw, cmd, agent, now);
    }
    if cmd.max_wait() > 0 {
        written.push(keys::DEADLINES.to_owned());
    }
    let history: Vec<String> = batch.iter().map(|a| keys::jobs_of_agent(a)).collect();
    router::index(&mut pipe, &history, &cmd.id, state.config.result_ttl);
    (pipe, written)
}

/// Sends a `kill` of job `id` to `agent`, by the controller's own account.
async fn kill_there(state: &Shared, id: &str, agent: &str) -> redis::RedisResult<()> {
    match crate::jobs::kill_on(state, id, agent, "rollout").await {
        Ok(_) => Ok(()),
        Err(crate::jobs::SubmitError::Redis(e)) => Err(e),
        Err(crate::jobs::SubmitError::Invalid(i)) => Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "kill",
            i.to_string(),
        ))),
    }
}

/// Ends every target of rollout `id` after the first `released` that has no result yet with
/// `end` and `reason`, through the normal result path (recorded once per target).
async fn end_unreleased(
    state: &Shared,
    id: &str,
    released: usize,
    reason: &str,
    end: JobState,
) -> redis::RedisResult<()> {
    let Some((raw, targets)) = command_of(state, id).await? else {
        return Ok(());
    };
    let (name, args) = serde_json::from_str::<Command>(&raw)
        .map(|c| (c.cmd, c.args))
        .unwrap_or_default();
    let rest = &targets[released.min(targets.len())..];
    tracing::info!(
        id,
        targets = rest.len(),
        reason,
        "rollout: ending the targets not released"
    );
    let mut ended = 0;
    for chunk in rest.chunks(END_CHUNK) {
        let ends: Vec<(&str, JobResult)> = chunk
            .iter()
            .map(|agent| {
                let (gid, nid) = keys::split_agent(agent);
                let mut result = JobResult::error(id, gid, nid, &name, args.clone(), reason);
                result.state = end;
                (agent.as_str(), result)
            })
            .collect();
        let outcomes = results::record_unsent(state, &ends).await?;
        ended += outcomes
            .iter()
            .filter(|o| **o == results::Outcome::Recorded)
            .count();
    }
    if ended > 0 && end == JobState::Error {
        state.metrics.rollout_stopped();
    }
    Ok(())
}

/// Adds to `pipe` the prompt to look at rollout `id` at once (when it is one): a result came.
/// Scored 0, due to any sweep whatever its clock.
pub fn prompt(pipe: &mut redis::Pipeline, id: &str) {
    pipe.cmd("ZADD")
        .arg(keys::ROLLOUTS)
        .arg("XX")
        .arg(0)
        .arg(id)
        .ignore();
}

/// Adds to `pipe` a new rollout `id`, to look at from `now`.
pub fn track(pipe: &mut redis::Pipeline, id: &str, now: u64) {
    pipe.zadd(keys::ROLLOUTS, id, now).ignore();
}

/// Stops rollout `id` (a kill): marks it stopped and prompts the sweeper, which ends the
/// targets not released yet `KILLED` (and kills the job on a batch whose push the kill raced).
/// Quick whatever the number of targets, so the router and `DELETE /v1/jobs/{id}` call it.
/// Returns whether the job was a running rollout; false for any other job.
pub async fn kill(state: &Shared, id: &str) -> redis::RedisResult<bool> {
    let stopped: i64 = state
        .scripts
        .rollout_stop
        .key(keys::job(id))
        .arg(KILLED_REASON)
        .arg(JobState::Killed.as_str())
        .invoke_async(&mut state.conn())
        .await?;
    if stopped == 0 {
        return Ok(false);
    }
    let mut pipe = redis::pipe();
    prompt(&mut pipe, id);
    pipe.exec_async(&mut state.conn()).await?;
    Ok(true)
}

/// The rollout fields of a job record, for operators (`GET /v1/jobs/{id}`, `jsctl job ID`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Targets released at a time, seconds between batches, failures tolerated (null: no limit).
    pub batch: usize,
    pub batch_wait: u64,
    pub max_failures: Option<usize>,
    /// Targets released so far (the first ones of the sorted `targets`).
    pub released: usize,
    /// Released targets whose result is not `OK`.
    pub failed: usize,
    /// Why the targets not released ended (the rollout stopped or was killed), if it did.
    pub stopped: Option<String>,
}

impl Progress {
    /// From a `job:<id>` hash; `None` for a job that is not a rollout.
    pub fn from_fields(fields: &std::collections::BTreeMap<String, String>) -> Option<Progress> {
        let plan: Plan = serde_json::from_str(fields.get("rollout")?).ok()?;
        let number = |f: &str| fields.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(Progress {
            batch: plan.batch,
            batch_wait: plan.batch_wait,
            max_failures: plan.max_failures,
            released: number("released"),
            failed: number("failed"),
            stopped: fields.get("stopped").cloned(),
        })
    }
}

#[cfg(test)]
mod tests;
