//! Jobs that run more than once (DESIGN §3 args, §6): long-running daemons (`max_time` -1),
//! jobs with a restart limit (`max_restart`) and recurring jobs (`recurring_period`, `cron`).
//!
//! - **Restarts.** A process of a long-running job, or of a job with `max_restart`, that fails
//!   (exits non-zero, is killed by a signal, times out) is started again. A failure within
//!   [`QUICK_FAILURE`] of the start counts: after `max_restart` of them in a row the job gives up,
//!   sends a level-9 alert and ends `ERROR`. A run that lasted longer resets the count and is
//!   restarted without counting. Restarts wait 1 s, doubling with each counted failure up to
//!   `restart_backoff_max`, so a crashing daemon cannot spin. A clean exit (code 0) ends the
//!   job `OK`: a daemon that stops by itself has finished.
//! - **Recurring.** A run every `recurring_period` seconds, counted from the start of the previous
//!   run; a run that takes longer than the period is followed at once by the next, never
//!   overlapped. Each run posts its own result (`run` = its number, `final` = false) and the job
//!   stays `RUNNING` until it is killed. Failed runs do not stop it (`max_restart` does not apply).
//! - **Cron** (`cron`, `tz`): recurring, with each run due at the next cron time after the end of
//!   the previous one; cron times that pass while a run is still going are skipped and counted
//!   in its result (`skipped`) ([`crate::supervisor::cron`]). `max_time` bounds each run.
//! - **Remembered** (long-running and recurring jobs): the agent stopping leaves them `RUNNING`
//!   in the store, and the next start brings them back ([`crate::supervisor::recovery`]). `killall` ends
//!   their current run (posted `KILLED`, `final` = false) but keeps them: a long-running job is
//!   started again after 1 s, a recurring one at its next period (or cron time). `kill` forgets
//!   them: they end `KILLED` for good.

use std::time::Duration;

use tokio::time::Instant;

use schemas::{ExecuteArgs, JobResult, JobState};
use serde_json::Value;

use super::cron::{CronRuns, WallClock};
use super::{Ended, Job, Run, Supervisor, Waited};
use crate::supervisor::registry::Ticket;

/// A failure within this long of the start counts against `max_restart`.
pub(crate) const QUICK_FAILURE: Duration = Duration::from_secs(5 * 60);

/// The first restart wait; it doubles with each counted failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// How a job runs over time, from its args.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `max_time` -1.
    pub(crate) long_running: bool,
    /// `recurring_period`, when not 0.
    pub(crate) period: Option<Duration>,
    /// `cron` is given: runs at its times ([`super::cron::CronRuns`]).
    pub(crate) cron: bool,
    /// `max_restart`.
    pub(crate) max_restart: u32,
}

/// What comes after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Run again after this wait.
    Again(Duration),
    /// The job has ended with this run's result.
    Finish,
    /// Too many quick failures: alert and end `ERROR`.
    GiveUp,
}

impl Plan {
    pub(crate) fn of(args: &ExecuteArgs) -> Plan {
        Plan {
            long_running: args.max_time == -1,
            period: (args.recurring_period > 0).then(|| Duration::from_secs(args.recurring_period)),
            cron: args.cron.is_some(),
            max_restart: args.max_restart,
        }
    }

    /// Whether the job may run more than once.
    pub(crate) fn repeats(&self) -> bool {
        self.remembered() || self.max_restart > 0
    }

    /// Whether the job is kept across agent restarts and `killall`.
    pub(crate) fn remembered(&self) -> bool {
        self.long_running || self.recurring()
    }

    /// Whether each run posts its own result and the job runs on (`recurring_period`, `cron`).
    pub(crate) fn recurring(&self) -> bool {
        self.period.is_some() || self.cron
    }

    /// What follows a run that `ended` after `lasted`; `failures` counts the quick failures in
    /// a row and is updated.
    pub(super) fn next(
        &self,
        ended: Ended,
        lasted: Duration,
        failures: &mut u32,
        cap: Duration,
    ) -> Next {
        if let Some(period) = self.period {
            return Next::Again(period.saturating_sub(lasted));
        }
        if self.cron {
            // The wait comes from the schedule (`CronRuns::advance`), not from here.
            return Next::Again(Duration::ZERO);
        }
        match ended {
            Ended::Failed if lasted >= QUICK_FAILURE => {
                *failures = 0;
                Next::Again(FIRST_BACKOFF)
            }
            Ended::Failed if *failures >= self.max_restart => Next::GiveUp,
            Ended::Failed => {
                *failures += 1;
                Next::Again(backoff(*failures, cap))
            }
            _ => Next::Finish,
        }
    }

    /// The wait before the first run: none, except for a recurring job brought back by a
    /// restarted agent, which keeps to its period.
    fn first_wait(&self, last_start_ms: Option<u64>) -> Duration {
        match (self.period, last_start_ms) {
            (Some(period), Some(last)) => {
                let due = last.saturating_add(period.as_millis() as u64);
                Duration::from_millis(due.saturating_sub(schemas::now_ms()))
            }
            _ => Duration::ZERO,
        }
    }
}

/// The wait before restart number `failures` (1 for the first): 1 s doubling, at most `cap`.
pub(crate) fn backoff(failures: u32, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(cap)
}

/// What the loop does after a run.
enum After {
    /// Run again after this wait.
    Again(Duration),
    /// The job is over: store this final result (boxed: a result is large beside a wait).
    Finish(Box<JobResult>),
    /// The agent is stopping: leave the job as it is in the store.
    Leave,
}

/// How a wait between runs ended.
enum Woken {
    /// The run is due and has its turn (slot and queue), held until it ends.
    Due(super::Turn),
    Killed,
    Stopping,
}

impl Supervisor {
    /// Runs a job that may run more than once until it ends, is killed, or the agent stops.
    pub(super) async fn supervise(&self, job: Job, mut ticket: Ticket) {
        let plan = Plan::of(&job.args);
        let resume = job.resume.unwrap_or_default();
        let mut runs = resume.runs;
        let mut failures = 0;
        let mut cron = match job.args.schedule() {
            Ok(schedule) => schedule.map(|s| CronRuns::new(s, WallClock::new())),
            // Refused when the command was parsed; should its last time pass before it got
            // here, it ends with the reason rather than run at the wrong times.
            Err(e) => return self.finish(self.error(&job, e.to_string()), ticket).await,
        };
        let first_wait = match cron.as_mut() {
            Some(cron) => cron.advance(),
            None => plan.first_wait(resume.last_start_ms),
        };
        // When the next run is due: a `killall` between runs leaves it where it is.
        let mut due = Instant::now() + first_wait;
        loop {
            match self.wait_run(&job, &ticket, due).await {
                Woken::Stopping => return,
                Woken::Killed => {
                    // Killed between runs: nothing runs, so there is no run result.
                    if !self.killed_idle(&job, &plan, &mut ticket, runs) {
                        let result = self.killed_queued(&job, ticket.killer().as_ref());
                        return self.finish(numbered(result, runs), ticket).await;
                    }
                }
                Woken::Due(turn) => {
                    runs += 1;
                    let mut run = self.execute(&job, &ticket, runs).await;
                    // Waits count from the run's end, not from when its result was stored.
                    let ended = Instant::now();
                    drop(turn);
                    // A cron job's next time is fixed now, at the run's end: a time that comes
                    // while the result is stored is run (late), not lost uncounted.
                    let next_cron = cron.as_mut().map(|cron| {
                        let (skipped, wait) = cron.end_run();
                        run.result.skipped = warn_skipped(skipped, runs);
                        ended + wait
                    });
                    let after = self
                        .after_run(&job, &plan, &mut ticket, run, runs, &mut failures)
                        .await;
                    match after {
                        After::Again(wait) => due = next_cron.unwrap_or(ended + wait),
                        After::Finish(result) => return self.finish(*result, ticket).await,
                        After::Leave => return,
                    }
                }
            }
        }
    }

    /// Waits until `due`, then for a slot (and the job's queue), killable all along.
    async fn wait_run(&self, job: &Job, ticket: &Ticket, due: Instant) -> Woken {
        ticket.idle();
        tokio::select! {
            biased;
            _ = ticket.killed().cancelled() => return Woken::Killed,
            _ = self.inner.stop.cancelled() => return Woken::Stopping,
            _ = tokio::time::sleep_until(due) => {}
        }
        match self.wait_turn(job, ticket).await {
            Waited::Turn(turn) if ticket.start() => Woken::Due(turn),
            Waited::Turn(_) | Waited::Killed => Woken::Killed,
            Waited::Stopping => Woken::Stopping,
        }
    }

    /// Acts on the end of run number `runs`; `failures` counts the quick failures in a row.
    async fn after_run(
        &self,
        job: &Job,
        plan: &Plan,
        ticket: &mut Ticket,
        run: Run,
        runs: u64,
        failures: &mut u32,
    ) -> After {
        let mut result = numbered(run.result, runs);
        match run.ended {
            Ended::Stopping if plan.remembered() => {
                // Stays RUNNING in the store: the next start brings it back.
                tracing::debug!("remembered job stopped with the agent");
                After::Leave
            }
            Ended::Killed => {
                if !kept_by_killall(ticket, plan) {
                    return After::Finish(Box::new(result));
                }
                result.is_final = false;
                self.post_run(&result).await;
                if let Some(claim) = ticket.rearm() {
                    claim.answer(JobState::Running);
                }
                // Comes back: a daemon after the first restart wait, a recurring job on time
                // (a cron job's wait is its schedule's: the loop asks `CronRuns`).
                After::Again(match plan.period {
                    Some(period) => period.saturating_sub(run.lasted),
                    None => FIRST_BACKOFF,
                })
            }
            Ended::Stopping | Ended::NotStarted => After::Finish(Box::new(result)),
            Ended::Succeeded | Ended::Failed => {
                let cap = self.inner.restart_backoff_max;
                match plan.next(run.ended, run.lasted, failures, cap) {
                    Next::Again(wait) => {
                        if plan.recurring() {
                            result.is_final = false;
                            self.post_run(&result).await;
                        } else {
                            tracing::warn!(state = result.state.as_str(), exit_code = ?result.exit_code,
                                failures = *failures, wait_s = wait.as_secs_f64(), "process failed; restarting");
                        }
                        After::Again(wait)
                    }
                    Next::Finish => After::Finish(Box::new(result)),
                    Next::GiveUp => {
                        let text = give_up_text(job, plan, runs);
                        self.alert(job, &text).await;
                        result.state = JobState::Error;
                        result.critical = text.clone();
                        result.data = Value::String(text);
                        After::Finish(Box::new(result))
                    }
                }
            }
        }
    }

    /// Whether a job killed while it waited for its next run keeps waiting: a remembered job
    /// claimed by `killall` does, its next run still due when it was; any other kill ends it.
    fn killed_idle(&self, job: &Job, plan: &Plan, ticket: &mut Ticket, runs: u64) -> bool {
        if !kept_by_killall(ticket, plan) {
            return false;
        }
        if let Some(claim) = ticket.rearm() {
            claim.answer(JobState::Queued);
        }
        tracing::debug!(id = %job.command.id, runs, "killall left a waiting remembered job scheduled");
        true
    }

    /// Queues the result of one run of a job that goes on.
    async fn post_run(&self, result: &JobResult) {
        if let Err(e) = self.inner.store.run_result(result).await {
            tracing::error!(error = %e, run = result.run, "cannot store a run's result");
        }
    }
}

/// Whether the kill that claimed the job is a `killall` that keeps it (a remembered job).
fn kept_by_killall(ticket: &Ticket, plan: &Plan) -> bool {
    plan.remembered() && ticket.killer().is_some_and(|k| k.cmd == "killall")
}

/// `skipped` cron times passed while run `run` was going (or waiting for its turn): says so in
/// a warning.
fn warn_skipped(skipped: u64, run: u64) -> u64 {
    if skipped > 0 {
        tracing::warn!(
            run,
            skipped,
            "cron times passed while a run was still going; skipped"
        );
    }
    skipped
}

/// The result with its run number, for jobs that may run more than once.
fn numbered(mut result: JobResult, runs: u64) -> JobResult {
    result.run = runs;
    result
}

fn give_up_text(job: &Job, plan: &Plan, runs: u64) -> String {
    let what = match (job.args.domain.as_str(), job.args.name.as_str()) {
        ("", "") => format!("job {}", job.command.id),
        (domain, name) => format!("job {} ({domain}/{name})", job.command.id),
    };
    format!(
        "{what} failed {} times in a row within {} min of its start (max_restart {}, {runs} runs); given up",
        plan.max_restart + 1,
        QUICK_FAILURE.as_secs() / 60,
        plan.max_restart,
    )
}

#[cfg(test)]
mod tests;
