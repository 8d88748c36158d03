//! Config-file jobs at boot ([`crate::config::jobs`]): the agent starts each `[[job]]` of its
//! config itself, as if it had received the command. The config is their source of truth:
//!
//! - a table new to the store starts now, as run 1;
//! - a job the previous run left `RUNNING` (they are all remembered: daemons, `every`, `cron`)
//!   comes back as [`super::recovery`] brings back any remembered job — its leftover process
//!   killed, a cut run posted — unchanged when its table is, or with its table's new command,
//!   then at once;
//! - a job that had ended (killed by `kill`, given up after `max_restart`, a daemon that exited
//!   0) starts again: `kill` stops a config job until the next agent start, not for good;
//! - a job whose table is gone is stopped and forgotten: its final result is `KILLED`
//!   "removed from the config".
//!
//! Runs stay numbered across all of this (a changed or restarted job goes on from its last
//! run number), since the controller records a job's run once per number.
//!
//! [`super::recovery`] leaves `cfg:` jobs to this module.

use std::collections::HashMap;

use schemas::{Command, JobState};

use crate::command::dispatch::Dispatcher;
use crate::config::ConfigJob;
use crate::store::{Store, StoreError, StoredConfigJob};
use crate::supervisor::launch::Program;
use crate::supervisor::recovery::{cut_run, kill_leftover};
use crate::supervisor::{Job, Resume, Supervisor};

/// Data of the final result of a config job whose table was removed.
pub(crate) const REMOVED: &str = "removed from the config";

/// Counts of what the boot did, for the start-up log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Booted {
    /// Started: new tables and jobs that had ended.
    pub(crate) started: usize,
    /// Brought back as they were.
    pub(crate) resumed: usize,
    /// Brought back with a changed table.
    pub(crate) changed: usize,
    /// Stopped: their tables are gone.
    pub(crate) removed: usize,
}

/// Starts the config jobs `jobs` and settles the stored ones that are no longer configured.
pub(crate) async fn start(
    store: &Store,
    dispatcher: &Dispatcher,
    supervisor: &Supervisor,
    jobs: &[ConfigJob],
) -> Result<Booted, StoreError> {
    let mut booted = Booted::default();
    let mut stored: HashMap<String, StoredConfigJob> = HashMap::new();
    for s in store.config_jobs().await? {
        if jobs.iter().any(|j| j.id == s.job.id) {
            stored.insert(s.job.id.clone(), s);
        } else if !s.finished {
            remove(store, dispatcher, &s).await?;
            booted.removed += 1;
        }
    }
    for job in jobs {
        let running = stored
            .remove(&job.id)
            .filter(|s| !s.finished && s.job.state == JobState::Running.as_str());
        let Some(previous) = running else {
            // New, ended, or stored and never started: (re)opened, its runs counted on.
            let runs = store.open_config_job(&job.id, &job.raw).await?;
            submit(
                supervisor,
                job,
                Resume {
                    runs,
                    last_start_ms: None,
                },
            );
            booted.started += 1;
            continue;
        };
        let changed = previous.job.raw != job.raw;
        settle_last_run(store, dispatcher, &previous).await?;
        let last_start_ms = if changed {
            tracing::info!(id = %job.id, "config job changed; running its new definition");
            store.replace_command(&job.id, &job.raw).await?;
            booted.changed += 1;
            None
        } else {
            booted.resumed += 1;
            previous.job.started_ms
        };
        let runs = previous.job.runs;
        submit(
            supervisor,
            job,
            Resume {
                runs,
                last_start_ms,
            },
        );
    }
    Ok(booted)
}

/// Kills what is left of the previous run's process and posts a recurring run it cut.
async fn settle_last_run(
    store: &Store,
    dispatcher: &Dispatcher,
    previous: &StoredConfigJob,
) -> Result<(), StoreError> {
    kill_leftover(&previous.job);
    if let Some(old) = job_of(&previous.job.raw, None) {
        if let Some(cut) = cut_run(&previous.job, &old, dispatcher) {
            store.run_result(&cut).await?;
        }
    }
    Ok(())
}

/// Stops a stored config job whose table is gone: final result `KILLED` [`REMOVED`].
async fn remove(
    store: &Store,
    dispatcher: &Dispatcher,
    s: &StoredConfigJob,
) -> Result<(), StoreError> {
    tracing::info!(id = %s.job.id, "config job removed from the config; stopping it");
    if s.job.state == JobState::Running.as_str() {
        settle_last_run(store, dispatcher, s).await?;
    }
    let mut result = dispatcher.error_for_raw(&s.job.id, &s.job.raw, REMOVED);
    result.state = JobState::Killed;
    result.run = s.job.runs;
    store.finish(&result).await
}

/// Hands a config job to the supervisor.
fn submit(supervisor: &Supervisor, job: &ConfigJob, resume: Resume) {
    match job_of(&job.raw, Some(resume)) {
        Some(job) => supervisor.submit(job),
        // The config was checked with the same parser at start.
        None => tracing::error!(id = %job.id, "a checked config job does not parse; not started"),
    }
}

/// The supervisor's job for a stored or configured command.
fn job_of(raw: &str, resume: Option<Resume>) -> Option<Job> {
    let (command, kind) = Command::parse(raw.as_bytes()).ok()?;
    let (args, program) = Program::of(kind).ok()?;
    Some(Job {
        command,
        args,
        program,
        resume,
    })
}

#[cfg(test)]
#[cfg(unix)]
mod tests;
