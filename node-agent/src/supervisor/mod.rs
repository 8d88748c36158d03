//! The process manager (DESIGN §6): runs `execute` / `execute_js_py` / `execute_js_lua` jobs,
//! at most `max_jobs` at once (the rest wait their turn, in order), jobs that name the same
//! `queue` one after another, and turns each run into a result stored with
//! [`Store::finish`].
//!
//! A job's life: `QUEUED` (stored by the poller) → waits for a slot → launch prepared (a bad
//! command ends here, `ERROR` with the reason) → spawned, `RUNNING` with its pid recorded → ends
//! `OK`, `ERROR`, or `TIMEOUT` after `max_time`. A `kill` or `killall` ([`Supervisor::kill`])
//! ends it `KILLED` at any point before that, without starting it if it was still waiting.
//!
//! Jobs that run more than once — long-running (`max_time` -1), restarted (`max_restart`) and
//! recurring (`recurring_period`) — are looped over in `supervise.rs`; each run's output goes
//! through the job's logger ([`crate::logs::logger`]) and its process tree is sampled by the
//! [`Sampler`] while it runs.
//!
//! Each job is owned by its own task, which alone touches its process; the [`Registry`] holds
//! the jobs by id so a kill can reach their owners.
//!
//! Its helpers: [`launch`] turns a command's args into a program to start, [`process`] runs one
//! (stdin, [`output`] read into [`tail`]s and log messages, time limit, killing its tree through
//! [`platform`]), [`registry`] holds the jobs by id, and [`recovery`] settles at start-up the
//! jobs a previous run left unfinished.
//!
//! Stopping the agent ([`Supervisor::shutdown`]) kills every running tree and reports those jobs
//! `ERROR` "agent stopped" at once — except remembered jobs (long-running, recurring), which stay
//! `RUNNING` in the store and come back on the next start; jobs still waiting for a slot stay
//! `QUEUED` in the store and run when the agent starts again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::{Command, ExecuteArgs, JobResult, JobState};
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::logs::Logs;
use crate::stats::procstats::Sampler;
use crate::store::{Started, Store};
use crate::supervisor::launch::{Launch, Launcher, Program};
use crate::supervisor::process::{Ending, Finished, Process, Stops};
use crate::supervisor::registry::{Killer, Registry, Ticket};

pub(crate) mod config_jobs;
pub(crate) mod cron;
mod kill;
pub(crate) mod launch;
pub mod output;
pub(crate) mod platform;
pub(crate) mod process;
pub(crate) mod recovery;
pub(crate) mod registry;
mod supervise;
pub(crate) mod tail;

pub(crate) use supervise::Plan;

/// Data of a job killed because the agent stopped.
pub(crate) const AGENT_STOPPED: &str = "agent stopped";

/// How long a killed job's process tree has to exit after SIGTERM before it gets SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);

/// A job for the process manager.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) command: Command,
    pub(crate) args: ExecuteArgs,
    pub(crate) program: Program,
    /// Where a remembered job left off, when a restarted agent brings it back.
    pub(crate) resume: Option<Resume>,
}

/// What a previous agent recorded of a remembered job (long-running, recurring) it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Runs started so far.
    pub(crate) runs: u64,
    /// When the last run started, ms since the epoch.
    pub(crate) last_start_ms: Option<u64>,
}

/// One run of a job, ended.
struct Run {
    result: JobResult,
    ended: Ended,
    /// How long the process ran.
    lasted: Duration,
}

/// How a run ended, as the supervisor acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Exit code 0.
    Succeeded,
    /// Exited non-zero, killed by a signal, timed out, or lost.
    Failed,
    /// Killed by `kill` or `killall`.
    Killed,
    /// Killed because the agent is stopping.
    Stopping,
    /// The process could not be started (bad launch, missing executable or script).
    NotStarted,
}

impl Ended {
    fn of(ending: &Ending) -> Ended {
        match ending {
            Ending::Exited(status) if status.success() => Ended::Succeeded,
            Ending::Exited(_) | Ending::TimedOut | Ending::Lost(_) => Ended::Failed,
            Ending::Killed => Ended::Killed,
            Ending::Cancelled => Ended::Stopping,
        }
    }
}

impl Run {
    fn not_started(result: JobResult) -> Run {
        Run {
            result,
            ended: Ended::NotStarted,
            lasted: Duration::ZERO,
        }
    }
}

/// Handle to the process manager; clones share it.
#[derive(Clone)]
pub(crate) struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    launcher: Launcher,
    gid: u64,
    nid: u64,
    slots: Arc<Semaphore>,
    /// Serial queues by name. A std mutex: it is held only to look up an entry, never across
    /// an await.
    queues: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    registry: Registry,
    sampler: Sampler,
    restart_backoff_max: Duration,
    /// Every spawn, by job id, on the tokio clock: lets tests on paused time see restarts.
    #[cfg(test)]
    spawned: Mutex<Vec<(String, Instant)>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// The logger: each run gets a job logger for its output.
    logs: Logs,
}

/// What a job holds while it runs.
struct Turn {
    _queue: Option<OwnedMutexGuard<()>>,
    _slot: OwnedSemaphorePermit,
}

/// How waiting for a turn ended.
enum Waited {
    Turn(Turn),
    /// A kill claimed the job while it waited.
    Killed,
    /// The agent is stopping.
    Stopping,
}

impl Supervisor {
    pub(crate) fn new(config: &Config, store: Store, logs: Logs) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                store,
                launcher: Launcher::new(config),
                gid: config.gid,
                nid: config.nid,
                slots: Arc::new(Semaphore::new(config.max_jobs)),
                queues: Mutex::new(HashMap::new()),
                registry: Registry::default(),
                sampler: Sampler::new(config.stats_interval),
                restart_backoff_max: config.restart_backoff_max,
                #[cfg(test)]
                spawned: Mutex::default(),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
                logs,
            }),
        }
    }

    /// Starts a stored job; it runs when a slot (and its queue) is free. From now on a `kill`
    /// finds it.
    pub(crate) fn submit(&self, job: Job) {
        let _span = tracing::info_span!("job", id = %job.command.id).entered();
        let Some(ticket) = self.inner.registry.register(&job.command.id) else {
            // The store lets an id in once, so this is the same command again: the job already
            // held answers for it.
            tracing::error!("a job with this id is held already; not running it twice");
            return;
        };
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.run(job, ticket).await }.in_current_span());
    }

    /// The process stats sampler of the running jobs.
    pub(crate) fn sampler(&self) -> &Sampler {
        &self.inner.sampler
    }

    /// Sends a level-9 critical alert about a job: stored with its logs and forwarded to the
    /// controller's `alerts` stream whatever the job's `loglevels_ac` says.
    async fn alert(&self, job: &Job, text: &str) {
        let (id, a) = (&job.command.id, &job.args);
        tracing::error!(%id, domain = %a.domain, name = %a.name, alert = text, "critical alert");
        self.inner.logs.alert(id, &a.domain, &a.name, text).await;
    }

    /// Kills every running process tree, reports those jobs, and waits (at most `grace`) for
    /// their results to be stored. Jobs still waiting stay `QUEUED`.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "jobs did not finish stopping in time; they will be reported on the next start"
            );
        }
    }

    async fn run(&self, job: Job, ticket: Ticket) {
        if Plan::of(&job.args).repeats() {
            return self.supervise(job, ticket).await;
        }
        let turn = match self.wait_turn(&job, &ticket).await {
            // The job stays QUEUED and runs on the next start.
            Waited::Stopping => return,
            Waited::Turn(turn) if ticket.start() => Some(turn),
            // Claimed by a kill while waiting, or just as its turn came: it never starts.
            Waited::Turn(_) | Waited::Killed => None,
        };
        let result = match turn {
            Some(_turn) => self.execute(&job, &ticket, 1).await.result,
            None => self.killed_queued(&job, ticket.killer().as_ref()),
        };
        self.finish(result, ticket).await;
    }

    /// Stores a job's final result, then answers the kill that claimed it, if one did.
    async fn finish(&self, result: JobResult, ticket: Ticket) {
        let claim = ticket.leave();
        tracing::debug!(state = result.state.as_str(), "job finished");
        if let Err(e) = self.inner.store.finish(&result).await {
            tracing::error!(error = %e, "cannot store a job's result");
        }
        if let Some(claim) = claim {
            claim.answer(result.state);
        }
    }

    async fn wait_turn(&self, job: &Job, ticket: &Ticket) -> Waited {
        let queue = job.args.queue.as_ref().map(|name| self.queue(name));
        let slots = self.inner.slots.clone();
        let turn = async move {
            let queue = match queue {
                Some(q) => Some(q.lock_owned().await),
                None => None,
            };
            match slots.acquire_owned().await {
                Ok(slot) => Waited::Turn(Turn {
                    _queue: queue,
                    _slot: slot,
                }),
                // The slots are never closed; if they were, nothing could run any more.
                Err(_) => Waited::Stopping,
            }
        };
        tokio::select! {
            biased;
            _ = ticket.killed().cancelled() => Waited::Killed,
            _ = self.inner.stop.cancelled() => Waited::Stopping,
            waited = turn => waited,
        }
    }

    fn queue(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut queues = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget queues nobody holds, so the map stays as small as the set of busy queues.
        queues.retain(|_, q| Arc::strong_count(q) > 1);
        queues.entry(name.to_owned()).or_default().clone()
    }

    /// Runs a job whose turn came, once (run number `run`), to its end.
    async fn execute(&self, job: &Job, ticket: &Ticket, run: u64) -> Run {
        let inner = &self.inner;
        let stdin = stdin_bytes(job.command.data.as_ref());
        // A bad `loglevels*` ends the job before it starts.
        let logger = match inner.logs.job_logger(&job.command.id, &job.args) {
            Ok(logger) => logger,
            Err(reason) => return Run::not_started(self.error(job, reason)),
        };
        // Durably RUNNING before the spawn: a crash in between must not run it twice.
        if let Err(e) = inner.store.starting(&job.command.id, run).await {
            let reason = format!("cannot record the job's start, so it was not started: {e}");
            return Run::not_started(self.error(job, reason));
        }
        // `_launch` is kept until the end: it removes an inline script when dropped.
        let (_launch, process) = match self.spawn(job, stdin.is_some()) {
            Ok(spawned) => spawned,
            Err(reason) => return Run::not_started(self.error(job, reason)),
        };
        let starttime = schemas::now_ms();
        let clock = Instant::now();
        #[cfg(test)]
        inner
            .spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((job.command.id.clone(), clock));
        let started = Started {
            started_ms: starttime,
            pid: process.pid(),
            pid_start_time: process::start_time(process.pid()),
        };
        if let Err(e) = inner.store.start(&job.command.id, started).await {
            tracing::warn!(error = %e, "cannot record a started job; a restart will not find its process");
        }
        tracing::debug!(pid = process.pid(), run, "job started");
        let a = &job.args;
        let _sampled = inner.sampler.watch(
            &job.command.id,
            &a.domain,
            &a.name,
            a.stats_interval,
            process.pid(),
        );
        let limit = u64::try_from(job.args.max_time)
            .ok()
            .filter(|&s| s > 0)
            .map(Duration::from_secs);
        let stops = Stops {
            limit,
            kill: ticket.killed(),
            kill_grace: KILL_GRACE,
            stop: &inner.stop,
        };
        let finished = process.run(stdin, stops, Some(logger)).await;
        let ending = Ended::of(&finished.ending);
        let mut result = self.result_of(job, finished, ticket.killer().as_ref());
        result.starttime = starttime;
        result.time = clock.elapsed().as_millis() as u64;
        Run {
            result,
            ended: ending,
            lasted: clock.elapsed(),
        }
    }

    /// Prepares and spawns a job's process; the error is the reason the job cannot start.
    fn spawn(&self, job: &Job, stdin: bool) -> Result<(Launch, Process), String> {
        let launch = self
            .inner
            .launcher
            .prepare(&job.command.id, job.program, &job.args)
            .map_err(|e| e.to_string())?;
        match Process::spawn(&launch, stdin) {
            Ok(process) => Ok((launch, process)),
            Err(e) => Err(format!("cannot start {}: {e}", launch.program.display())),
        }
    }

    fn result_of(&self, job: &Job, finished: Finished, killer: Option<&Killer>) -> JobResult {
        let (state, exit_code, data) = match finished.ending {
            Ending::Exited(status) => match status.code() {
                Some(0) => (JobState::Ok, Some(0), String::new()),
                Some(code) => (JobState::Error, Some(code), String::new()),
                None => {
                    let signal = platform::exit_signal(&status)
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default();
                    (JobState::Error, None, format!("killed by signal{signal}"))
                }
            },
            Ending::TimedOut => (
                JobState::Timeout,
                None,
                format!("killed after max_time {} s", job.args.max_time),
            ),
            Ending::Killed => (JobState::Killed, None, killed_by(killer, "")),
            Ending::Cancelled => (JobState::Error, None, AGENT_STOPPED.to_owned()),
            Ending::Lost(e) => (
                JobState::Error,
                None,
                format!("lost track of the process: {e}"),
            ),
        };
        let mut result = self.result(job, state);
        result.exit_code = exit_code;
        result.data = Value::String(data);
        // The process's own result message, unless the run's ending has a reason to tell.
        if finished.level != 0 && result.data == "" {
            result.data = Value::String(finished.data);
            result.level = finished.level;
        }
        result.critical = finished.critical;
        result.streams = vec![finished.stdout, finished.stderr];
        result
    }

    /// The result of a job killed before it started.
    fn killed_queued(&self, job: &Job, killer: Option<&Killer>) -> JobResult {
        let mut result = self.result(job, JobState::Killed);
        result.data = Value::String(killed_by(killer, " before it started"));
        result
    }

    fn result(&self, job: &Job, state: JobState) -> JobResult {
        self.result_for(&job.command, state)
    }

    /// A result for a command, with no output.
    fn result_for(&self, c: &Command, state: JobState) -> JobResult {
        JobResult::new(
            &c.id,
            self.inner.gid,
            self.inner.nid,
            &c.cmd,
            c.args.clone(),
            state,
        )
    }

    fn error(&self, job: &Job, reason: String) -> JobResult {
        let mut result = self.result(job, JobState::Error);
        result.data = Value::String(reason);
        result
    }
}

/// Data of a killed job: `killed by kill command <id>`, then `suffix`.
fn killed_by(killer: Option<&Killer>, suffix: &str) -> String {
    match killer {
        Some(Killer { cmd, id }) => format!("killed by {cmd} command {id}{suffix}"),
        // A kill always leaves its claim; this is only a fallback.
        None => format!("killed{suffix}"),
    }
}

/// A string is passed as-is, any other JSON value serialized; no data means no stdin.
fn stdin_bytes(data: Option<&Value>) -> Option<Vec<u8>> {
    match data? {
        Value::Null => None,
        Value::String(s) => Some(s.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests;
