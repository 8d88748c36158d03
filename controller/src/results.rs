//! Result intake (DESIGN §5.3): each (job, agent) result is recorded once, appended to
//! `cmds_queue_<id>`, the job's state updated, the delivery settled and the change published.
//!
//! `job:<id>` and `cmds_queue_<id>` are in different Redis Cluster slots, so recording and
//! appending are two idempotent single-slot steps (`record_result.lua`, `append_result.lua`,
//! marked per agent and run), and the agent is answered only after both, and after `WAIT`.
//!
//! A run's result (`"final": false`) is taken only for a job that runs more than once
//! (`args.recurring_period` > 0, `args.cron`, or `args.max_time` -1); for any other job it is rejected
//! ([`Outcome::NotRecurring`]). The result list keeps `max_results` results, but its trim
//! removes only run results, never an agent's final result: no target of a fanout job can push
//! the others' final results out (`append_result.lua`). A config-file job has one target and a
//! final result per start of it: its list keeps its newest `max_results` results of any kind.
//!
//! A result of a config-file job (`cfg:<gid>:<nid>:…`, which the agent started itself) first
//! opens the job's record ([`crate::config_jobs`]); only the agent the id names may post one.
//! It is kept with the values of `args.env` masked.

use std::collections::HashMap;

use serde_json::Value;

use schemas::{BatchAnswer, JobEvent, JobResult, JobState};

use crate::intake::{self, Invalid, Shape};
use crate::redis_conn::Conn;
use crate::{keys, poll, state::Shared};

/// What became of one posted result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    Duplicate,
    UnknownJob,
    NotATarget,
    /// A run's result for a job that does not run more than once.
    NotRecurring,
    /// A result of the agent's own config job that cannot be kept ([`crate::config_jobs::open`]).
    ConfigJobRefused(crate::config_jobs::Refusal),
}

impl Outcome {
    /// Counts this outcome of the result of job `id` into `answer`.
    pub fn add_to(self, answer: &mut BatchAnswer, id: &str) {
        match self {
            Outcome::Recorded => answer.recorded += 1,
            Outcome::Duplicate => answer.duplicates += 1,
            Outcome::UnknownJob => answer.reject(
                id,
                "unknown_job",
                format!("no job `{id}` (never routed, or its record expired)"),
            ),
            Outcome::NotATarget => answer.reject(
                id,
                "unknown_job",
                format!("job `{id}` was not sent to this agent"),
            ),
            Outcome::NotRecurring => answer.reject(
                id,
                "not_recurring",
                format!(
                    "job `{id}` runs once (no args.recurring_period or args.cron, args.max_time is not -1): \
                     a run's result (\"final\": false) is refused; post its final result"
                ),
            ),
            Outcome::ConfigJobRefused(why) => answer.reject(id, why.code(), why.message(id)),
        }
    }
}

/// A result post, checked: one result, or a batch of them (each checked on its own).
#[derive(Debug)]
pub enum ResultPost {
    One(JobResult),
    /// The valid results, and the answer so far (the rejected ones).
    Batch(Vec<JobResult>, BatchAnswer),
}

/// Parses and checks a result post of agent `gid:nid` (a pure function: fuzzed).
pub fn parse_results(body: &[u8], gid: u64, nid: u64) -> Result<ResultPost, Invalid> {
    let expected = "a result object or an array of them";
    let mut posted = intake::batch(body, Shape::ObjectOrArray, expected, |item| {
        check_result(item, gid, nid)
    })?;
    if posted.single {
        return Ok(ResultPost::One(posted.valid.remove(0)));
    }
    let mut answer = BatchAnswer::default();
    for refused in posted.refused {
        answer.reject(&refused.id, refused.why.code, refused.why.message);
    }
    Ok(ResultPost::Batch(posted.valid, answer))
}

fn check_result(item: Value, gid: u64, nid: u64) -> Result<JobResult, Invalid> {
    let r: JobResult =
        serde_json::from_value(item).map_err(|e| Invalid::bad_request(format!("result: {e}")))?;
    if (r.gid, r.nid) != (gid, nid) {
        return Err(Invalid::mismatched_agent((r.gid, r.nid), (gid, nid)));
    }
    if !r.state.is_final() {
        return Err(Invalid::bad_request(format!(
            "result state must be final, not {}",
            r.state.as_str()
        )));
    }
    if !r.is_final && r.run == 0 {
        // Run results are recorded once per run number: without one it would pass for a
        // duplicate and be dropped.
        return Err(Invalid::bad_request(
            "a run's result (\"final\": false) needs its `run` number, 1 or more",
        ));
    }
    Ok(r)
}

/// Records one agent's result of a job.
pub async fn record(
    state: &Shared,
    agent: &str,
    result: &JobResult,
) -> redis::RedisResult<Outcome> {
    Ok(record_all(state, agent, std::slice::from_ref(result)).await?[0])
}

/// Records results the controller made itself for agents that were never sent the job (the
/// targets of a stopped rollout, `rollout.rs`), one per agent: concurrently (the multiplexed
/// connection pipelines them), published, and confirmed by replicas once for all of them.
pub async fn record_unsent(
    state: &Shared,
    results: &[(&str, JobResult)],
) -> redis::RedisResult<Vec<Outcome>> {
    let mut conn = state.durable().await?;
    let recorded = futures::future::try_join_all(
        results
            .iter()
            .map(|(agent, r)| record_one(state, conn.clone(), agent, r)),
    )
    .await?;
    let mut written = Vec::with_capacity(results.len() * 2);
    for ((_, r), (outcome, _)) in results.iter().zip(&recorded) {
        written.extend([keys::job(&r.id), keys::results(&r.id)]);
        if *outcome == Outcome::Recorded {
            state.metrics.finished(r.state.as_str());
        }
    }
    written.sort();
    written.dedup();
    state.confirm(&mut conn, &written).await?;
    Ok(recorded.into_iter().map(|(o, _)| o).collect())
}

/// Records an agent's results: each (job, agent) once, jobs concurrently (the multiplexed
/// connection pipelines them) and the results of one job in order (a run not above the last
/// one recorded counts as a repeat), appends each to its result list once, settles their
/// deliveries, publishes the changes, and returns once `--redis-wait-replicas` replicas hold
/// all of it (else an error: the agent keeps the results and posts them again, which is safe).
pub async fn record_all(
    state: &Shared,
    agent: &str,
    results: &[JobResult],
) -> redis::RedisResult<Vec<Outcome>> {
    let mut conn = state.durable().await?;
    let recorded = record_by_job(state, &conn, agent, results).await?;
    // Settles the deliveries even when the agent's ack was lost with a previous answer.
    let settled: Vec<String> = results
        .iter()
        .zip(&recorded)
        .filter(|(_, (o, _))| matches!(o, Outcome::Recorded | Outcome::Duplicate))
        .map(|(r, _)| r.id.clone())
        .collect();
    let mut prompts = redis::pipe();
    let mut any = false;
    for (r, (outcome, _)) in results.iter().zip(&recorded) {
        if *outcome == Outcome::Recorded {
            state.metrics.finished(r.state.as_str());
            if r.is_final {
                crate::rollout::prompt(&mut prompts, &r.id);
                any = true;
            }
        }
    }
    // Concurrently, so the multiplexed connection sends them in one round trip.
    let (settle, prompt) = futures::future::join(
        async {
            if settled.is_empty() {
                return Ok(vec![]);
            }
            poll::take_on(state, &mut conn.clone(), agent, 0, &settled).await
        },
        async {
            if !any {
                return Ok(());
            }
            prompts.exec_async(&mut conn.clone()).await
        },
    )
    .await;
    settle?;
    prompt?;
    let mut written = vec![keys::agent_queue(agent)];
    for r in results {
        written.extend([keys::job(&r.id), keys::results(&r.id)]);
    }
    state.confirm(&mut conn, &written).await?;
    Ok(recorded.into_iter().map(|(o, _)| o).collect())
}

/// [`record_one`] for each result (its outcome and the job's state, in the order of `results`):
/// the results of one job one after the other, in order, and the jobs concurrently.
async fn record_by_job(
    state: &Shared,
    conn: &Conn,
    agent: &str,
    results: &[JobResult],
) -> redis::RedisResult<Vec<(Outcome, String)>> {
    let mut jobs: Vec<Vec<usize>> = Vec::new();
    let mut of_job: HashMap<&str, usize> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        let job = *of_job.entry(&r.id).or_insert_with(|| {
            jobs.push(Vec::new());
            jobs.len() - 1
        });
        jobs[job].push(i);
    }
    let done = futures::future::try_join_all(jobs.iter().map(|indices| async move {
        let mut done = Vec::with_capacity(indices.len());
        for &i in indices {
            done.push((
                i,
                record_one(state, conn.clone(), agent, &results[i]).await?,
            ));
        }
        Ok::<_, redis::RedisError>(done)
    }))
    .await?;
    let mut recorded = vec![(Outcome::UnknownJob, String::new()); results.len()];
    for (i, outcome) in done.into_iter().flatten() {
        recorded[i] = outcome;
    }
    Ok(recorded)
}

/// Runs `record_result.lua` for one result on `job:<id>`, then appends it to `cmds_queue_<id>`
/// (once, whichever post gets there); returns what became of it and the job's state.
async fn record_one(
    state: &Shared,
    mut conn: Conn,
    agent: &str,
    result: &JobResult,
) -> redis::RedisResult<(Outcome, String)> {
    use crate::config_jobs::{self, Opened};
    let config_job = config_jobs::is_reserved(&result.id);
    let masked;
    let result = if config_job {
        masked = config_jobs::masked(result);
        &masked
    } else {
        result
    };
    let body = serde_json::to_string(result).expect("a result serializes");
    let mut stale = false;
    if config_job {
        match config_jobs::open(state, &mut conn, agent, result, &body).await? {
            Opened::NotTheOwner => return Ok((Outcome::NotATarget, String::new())),
            Opened::Refused(why) => return Ok((Outcome::ConfigJobRefused(why), String::new())),
            Opened::Stale => stale = true,
            Opened::Open => {}
        }
    }
    // A final result is recorded once per (job, agent), a run's once per run.
    let mark = match (result.is_final, config_job) {
        // A config job ends once per start of it by its agent, each time at a later run.
        (true, true) => format!("{agent}|{}|final", result.run),
        (true, false) => format!("{agent}|final"),
        (false, _) => format!("{agent}|{}|run", result.run),
    };
    // On one server the record and its append are one script: one round trip a result. On a
    // cluster `job:<id>` and `cmds_queue_<id>` are in different slots: two.
    if let (false, true, Some(marks)) = (
        config_job,
        state.redis.one_server(),
        keys::appended(&result.id),
    ) {
        let (before, after) = event_around_state(result);
        let mut both = state.scripts.record_and_append.key(keys::job(&result.id));
        both.key(keys::results(&result.id)).key(marks);
        record_args(&mut both, state, agent, result, &body);
        append_args(&mut both, state, &result.id, &mark, &body);
        both.arg(keys::EVENTS).arg(before).arg(after);
        let (status, job_state): (String, String) = both.invoke_async(&mut conn).await?;
        return Ok((outcome_of(&status), job_state));
    }
    // A stale final result of a config job is a duplicate (its append below is idempotent).
    let (status, job_state): (String, String) = if stale {
        ("duplicate".to_owned(), String::new())
    } else {
        let mut record = state.scripts.record_result.key(keys::job(&result.id));
        record_args(&mut record, state, agent, result, &body);
        record.invoke_async(&mut conn).await?
    };
    let outcome = outcome_of(&status);
    if matches!(outcome, Outcome::Recorded | Outcome::Duplicate) {
        // The event of a result recorded now goes out with its append.
        let event = (outcome == Outcome::Recorded).then(|| {
            JobEvent {
                id: result.id.clone(),
                gid: result.gid,
                nid: result.nid,
                state: JobState::parse(&job_state).unwrap_or(result.state),
            }
            .to_json()
        });
        append(state, &mut conn, &result.id, &mark, &body, event.as_deref()).await?;
    }
    Ok((outcome, job_state))
}

/// What `record_result.lua` answered, as an [`Outcome`].
fn outcome_of(status: &str) -> Outcome {
    match status {
        "recorded" => Outcome::Recorded,
        "duplicate" => Outcome::Duplicate,
        "not_a_target" => Outcome::NotATarget,
        "not_recurring" => Outcome::NotRecurring,
        _ => Outcome::UnknownJob,
    }
}

/// `record_result.lua`'s ARGV for `result` (its text `body`) of `agent`.
fn record_args(
    invocation: &mut redis::ScriptInvocation<'_>,
    state: &Shared,
    agent: &str,
    result: &JobResult,
    body: &str,
) {
    invocation
        .arg(agent)
        .arg(body)
        .arg(result.state.as_str())
        .arg(state.config.result_ttl.as_secs())
        .arg(schemas::now_ms())
        .arg(result.run)
        .arg(if result.is_final { "1" } else { "0" });
}

/// `append_result.lua`'s ARGV[1..7]: appending `result` with `mark` to job `id`'s list.
fn append_args(
    invocation: &mut redis::ScriptInvocation<'_>,
    state: &Shared,
    id: &str,
    mark: &str,
    result: &str,
) {
    invocation
        .arg(mark)
        .arg(result)
        .arg(state.config.result_ttl.as_secs())
        .arg(state.config.max_results)
        .arg(MARKS_KEPT)
        .arg(schemas::now_ms())
        // A config job has one target and ends once per start: its final results are bounded
        // like its runs.
        .arg(if crate::config_jobs::is_reserved(id) {
            "1"
        } else {
            "0"
        });
}

/// The text of the event of `result` before and after the job's state, which the script that
/// records it learns: `{"id":…,"gid":…,"nid":…,"state":"` and `"}` (a [`JobEvent`]).
fn event_around_state(result: &JobResult) -> (String, &'static str) {
    let id = serde_json::to_string(&result.id).expect("a string serializes");
    let before = format!(
        r#"{{"id":{id},"gid":{},"nid":{},"state":""#,
        result.gid, result.nid
    );
    (before, r#""}"#)
}

/// Marks kept per result list: far more than the results a list keeps, so a result posted again
/// after a lost answer is always recognised.
const MARKS_KEPT: usize = 1000;

/// Appends `result` to `cmds_queue_<id>` unless a result with `mark` was appended already, and
/// publishes `event` on `jsacc:events` (in the same round trip) when there is one.
pub async fn append(
    state: &Shared,
    conn: &mut Conn,
    id: &str,
    mark: &str,
    result: &str,
    event: Option<&str>,
) -> redis::RedisResult<()> {
    let ttl = state.config.result_ttl.as_secs();
    let Some(marks) = keys::appended(id) else {
        // An id with a brace (refused at routing): no marks key can share its list's slot.
        let mut pipe = redis::pipe();
        pipe.rpush(keys::results(id), result)
            .ignore()
            .expire(keys::results(id), ttl as i64)
            .ignore();
        if let Some(event) = event {
            pipe.publish(keys::EVENTS, event).ignore();
        }
        return pipe.exec_async(conn).await;
    };
    let mut invocation = state.scripts.append_result.key(keys::results(id));
    invocation.key(marks);
    append_args(&mut invocation, state, id, mark, result);
    invocation
        .arg(keys::EVENTS)
        .arg(event.unwrap_or(""))
        .invoke_async::<i64>(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(is_final: bool) -> JobResult {
        let mut r = JobResult::error("j", 1, 2, "execute", serde_json::json!({}), "x");
        r.critical = "\",\"final\":false}".into();
        (r.run, r.is_final) = (3, is_final);
        r
    }

    /// The event a script builds around the job's state is a [`JobEvent`]'s text.
    #[test]
    fn the_event_around_the_state_is_a_job_event() {
        let mut r = JobResult::error("j\"1", 1, 2, "execute", serde_json::json!({}), "x");
        r.state = JobState::Ok;
        let (before, after) = event_around_state(&r);
        let event = JobEvent {
            id: r.id.clone(),
            gid: 1,
            nid: 2,
            state: JobState::Running,
        };
        assert_eq!(format!("{before}RUNNING{after}"), event.to_json());
    }

    /// `append_result.lua` tells a run's result from a final one by how its JSON ends.
    #[test]
    fn only_a_runs_result_ends_with_final_false() {
        let end = "\"final\":false}";
        let run = serde_json::to_string(&result(false)).expect("serializes");
        assert!(run.ends_with(end), "{run}");
        let mut skipping = result(false);
        skipping.skipped = 2;
        let skipping = serde_json::to_string(&skipping).expect("serializes");
        assert!(
            skipping.ends_with(end),
            "a cron run's `skipped` comes before: {skipping}"
        );
        let last = serde_json::to_string(&result(true)).expect("serializes");
        assert!(!last.ends_with(end), "{last}");
        let mut once = result(true);
        once.run = 0;
        let once = serde_json::to_string(&once).expect("serializes");
        assert!(!once.ends_with(end), "{once}");
    }

    #[test]
    fn a_run_of_a_job_that_runs_once_is_rejected_with_its_reason() {
        let mut answer = BatchAnswer::default();
        Outcome::Recorded.add_to(&mut answer, "j1");
        Outcome::NotRecurring.add_to(&mut answer, "j2");
        assert_eq!((answer.recorded, answer.rejected.len()), (1, 1));
        let rejected = &answer.rejected[0];
        assert_eq!(
            (rejected.id.as_str(), rejected.error.as_str()),
            ("j2", "not_recurring")
        );
        assert!(
            rejected.message.contains("recurring_period"),
            "{}",
            rejected.message
        );
    }
}
