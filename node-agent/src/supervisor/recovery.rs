//! Start-up recovery (DESIGN §10): settles the jobs a previous run of the agent left unfinished.
//!
//! - `RUNNING`: the agent stopped or died while the job ran. If its process is still there —
//!   the recorded pid exists *and* started at the recorded time, never the pid alone, since pids
//!   are reused — its tree is killed (its output pipes went with the old agent). A remembered
//!   job (long-running, recurring) then comes back: a long-running one starts again at once, a
//!   recurring one at its next period (a cron job at its next cron time); its run count goes
//!   on. A recurring run that was started but whose result was never queued (the agent went
//!   away during it, or between its end and its result) is posted `ERROR` "agent restarted"
//!   with its number, so every run has a result. Any other job ends `ERROR` "agent restarted".
//! - `QUEUED`: stored but never started; it is dispatched now, like a new command. A stored
//!   `restart` is answered but does not restart again: this start is that restart.
//!
//! Config-file jobs (`cfg:` ids) are left to [`crate::supervisor::config_jobs`]: the config, not
//! the store, decides whether they come back.

use schemas::{Command, JobResult};

use crate::command::dispatch::{Dispatched, Dispatcher, Incoming};
use crate::store::{Store, StoreError, Unfinished};
use crate::supervisor::launch::Program;
use crate::supervisor::platform;
use crate::supervisor::process;
use crate::supervisor::{Job, Plan, Resume, Supervisor};

/// Data of a job that was running when the agent went away.
pub(crate) const AGENT_RESTARTED: &str = "agent restarted";

/// Counts of what recovery did, for the start-up log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub(crate) ended: usize,
    pub(crate) killed: usize,
    pub(crate) resumed: usize,
}

pub(crate) async fn recover(
    store: &Store,
    dispatcher: &Dispatcher,
    supervisor: &Supervisor,
) -> Result<Recovered, StoreError> {
    let mut recovered = Recovered::default();
    for job in store.unfinished().await? {
        if crate::config::jobs::is_config_job(&job.id) {
            continue; // the config decides: supervisor::config_jobs
        }
        if job.state == schemas::JobState::Running.as_str() {
            if kill_leftover(&job) {
                recovered.killed += 1;
            }
            if let Some(remembered) = remembered(&job) {
                if let Some(cut) = cut_run(&job, &remembered, dispatcher) {
                    tracing::warn!(id = %job.id, run = cut.run, "a recurring run was cut by the agent's stop");
                    store.run_result(&cut).await?;
                }
                tracing::info!(id = %job.id, runs = job.runs, "bringing back a remembered job");
                supervisor.submit(remembered);
                recovered.resumed += 1;
                continue;
            }
            store
                .finish(&dispatcher.error_for_raw(&job.id, &job.raw, AGENT_RESTARTED))
                .await?;
            recovered.ended += 1;
            continue;
        }
        let incoming = Incoming::parse(job.raw.clone()).unwrap_or_else(|reason| Incoming {
            id: job.id.clone(),
            raw: job.raw.clone(),
            parsed: Err(reason),
        });
        if dispatcher.dispatch(incoming).await? == Dispatched::Restart {
            tracing::info!(id = %job.id, "answered a restart stored before the last stop");
        }
        recovered.resumed += 1;
    }
    Ok(recovered)
}

/// The job to run again if `job` is a remembered one (long-running, recurring).
fn remembered(job: &Unfinished) -> Option<Job> {
    let (command, kind) = Command::parse(job.raw.as_bytes()).ok()?;
    let (args, program) = Program::of(kind).ok()?;
    if !Plan::of(&args).remembered() {
        return None;
    }
    Some(Job {
        command,
        args,
        program,
        resume: Some(Resume {
            runs: job.runs,
            last_start_ms: job.started_ms,
        }),
    })
}

/// The result of a recurring job's last run if that run started but its result was never
/// queued: `ERROR` [`AGENT_RESTARTED`], not final.
pub(super) fn cut_run(
    job: &Unfinished,
    remembered: &Job,
    dispatcher: &Dispatcher,
) -> Option<JobResult> {
    if !Plan::of(&remembered.args).recurring() || job.runs <= job.runs_posted {
        return None;
    }
    let mut result = dispatcher.error_for_raw(&job.id, &job.raw, AGENT_RESTARTED);
    result.run = job.runs;
    result.is_final = false;
    Some(result)
}

/// Kills the job's process tree if its process is still the one the agent started.
pub(super) fn kill_leftover(job: &Unfinished) -> bool {
    let (Some(pid), Some(recorded)) = (job.pid, job.pid_start_time) else {
        return false;
    };
    if process::start_time(pid) != Some(recorded) {
        return false;
    }
    tracing::warn!(id = %job.id, pid, "killing a job process left by the previous run");
    platform::kill_orphan(pid);
    true
}

#[cfg(test)]
#[cfg(unix)]
mod tests;
