//! The jobs ledger: every command received, keyed by its id so a command delivered twice is
//! stored, and run, once; its state, times, process and runs. Ending a job queues its result in
//! the outbox in the same transaction ([`super::outbox`]).

use std::time::Duration;

use rusqlite::params;
use schemas::{JobResult, JobState};
use tokio_util::sync::CancellationToken;

use super::outbox::{queue, OutboxKind};
use super::result_limit;
use super::{Store, StoreError};

/// Finished jobs are forgotten (and their ids may be reused) after this long.
pub(crate) const KEEP_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A command as received: its id and the raw JSON, stored before it is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) raw: String,
}

/// A job that has not finished: found at start-up, after the agent stopped or died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unfinished {
    pub(crate) id: String,
    pub(crate) raw: String,
    pub(crate) state: String,
    pub(crate) pid: Option<u32>,
    pub(crate) pid_start_time: Option<u64>,
    /// When its last run started (ms since the epoch), if it started.
    pub(crate) started_ms: Option<u64>,
    /// How many times its process was started.
    pub(crate) runs: u64,
    /// The last run whose own result was queued (recurring jobs; see [`Store::run_result`]).
    pub(crate) runs_posted: u64,
}

impl Unfinished {
    /// Reads one from a row whose first eight columns are `id, command, state, pid,
    /// pid_start_time, started_ms, runs, runs_posted`.
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Unfinished> {
        Ok(Unfinished {
            id: row.get(0)?,
            raw: row.get(1)?,
            state: row.get(2)?,
            pid: row.get(3)?,
            pid_start_time: row.get(4)?,
            started_ms: row.get(5)?,
            runs: row.get(6)?,
            runs_posted: row.get(7)?,
        })
    }
}

/// Where a started job's process is, so a later agent can find (and kill) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Started {
    pub(crate) started_ms: u64,
    pub(crate) pid: u32,
    pub(crate) pid_start_time: Option<u64>,
}

/// A job's end as stored: its id, final state and result (encoded within the result limit).
struct Ended {
    id: String,
    state: JobState,
    body: String,
}

impl Ended {
    fn of(result: &JobResult) -> Result<Ended, StoreError> {
        Ok(Ended {
            id: result.id.clone(),
            state: result.state,
            body: result_limit::encode(result)?,
        })
    }
}

/// Ends jobs (`now`, ms) and queues their results in the outbox, in the caller's transaction.
fn end_jobs(
    tx: &rusqlite::Transaction<'_>,
    ended: &[Ended],
    now: u64,
) -> Result<(), rusqlite::Error> {
    {
        let mut end =
            tx.prepare_cached("UPDATE jobs SET state = ?2, finished = ?3 WHERE id = ?1")?;
        for e in ended {
            end.execute(params![e.id, e.state.as_str(), now])?;
        }
    }
    queue(tx, OutboxKind::Result, ended.iter().map(|e| &e.body))?;
    Ok(())
}

impl Store {
    /// Stores received commands in one transaction, `QUEUED`. Returns, per command, whether it
    /// is new (`false`: its id was seen before and it must not run again).
    #[cfg(test)]
    pub(crate) async fn receive(&self, batch: Vec<Received>) -> Result<Vec<bool>, StoreError> {
        self.receive_answered(batch.into_iter().map(|r| (r, None)).collect())
            .await
    }

    /// [`Store::receive`], and in the same transaction the new commands that come with their
    /// answer (those answered without acting on anything: `ping`, a command that cannot be
    /// parsed) end with it, queued in the outbox: one commit a poll batch, not two.
    pub(crate) async fn receive_answered(
        &self,
        batch: Vec<(Received, Option<JobResult>)>,
    ) -> Result<Vec<bool>, StoreError> {
        let now = schemas::now_ms();
        let (received, answers): (Vec<Received>, Vec<Option<JobResult>>) =
            batch.into_iter().unzip();
        let answers = answers
            .iter()
            .map(|a| a.as_ref().map(Ended::of).transpose())
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (new, answered) = self
            .call(move |conn| {
                let tx = conn.transaction()?;
                let mut new = Vec::with_capacity(received.len());
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO jobs (id, command, state, received_ms) VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    for r in &received {
                        new.push(insert.execute(params![r.id, r.raw, JobState::Queued.as_str(), now])? == 1);
                    }
                }
                // Only a new command ends with its answer: one seen before ended already.
                let answered: Vec<Ended> = answers
                    .into_iter()
                    .zip(&new)
                    .filter_map(|(answer, fresh)| answer.filter(|_| *fresh))
                    .collect();
                end_jobs(&tx, &answered, now)?;
                tx.commit()?;
                Ok((new, !answered.is_empty()))
            })
            .await?;
        if answered {
            self.outbox_added.notify_one();
        }
        Ok(new)
    }

    /// Records, before its process is spawned, that run `run` (1 for the first) of a job is
    /// starting. A job found `RUNNING` after a crash may have run, so it is never started again
    /// (at most once) unless it is remembered (long-running, recurring).
    pub(crate) async fn starting(&self, id: &str, run: u64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.execute(
                "UPDATE jobs SET state = ?2, started_ms = ?3, runs = ?4 WHERE id = ?1",
                params![id, JobState::Running.as_str(), schemas::now_ms(), run],
            )?;
            Ok(())
        })
        .await
    }

    /// Records that a job's process started.
    pub(crate) async fn start(&self, id: &str, started: Started) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |conn| {
            conn.execute(
                "UPDATE jobs SET state = ?2, started_ms = ?3, pid = ?4, pid_start_time = ?5 WHERE id = ?1",
                params![id, JobState::Running.as_str(), started.started_ms, started.pid, started.pid_start_time],
            )?;
            Ok(())
        })
        .await
    }

    /// Queues the result of one run of a job that goes on (a recurring run, or a remembered job's
    /// run ended by `killall`); the job stays `RUNNING`. In the same transaction the job's
    /// `runs_posted` becomes the run's number, so a later start can tell a run that was
    /// started but never posted (the agent went away during it) from one that was.
    pub(crate) async fn run_result(&self, result: &JobResult) -> Result<(), StoreError> {
        let body = result_limit::encode(result)?;
        let (id, run) = (result.id.clone(), result.run);
        // A config job's runs do not wake the uploader: they go with its next upload (of
        // anything; at the latest its tick, 10 s), so a job that runs every second does not
        // make one post per run (issue 14: "updates coalesced per submission interval").
        let wake = !crate::config::jobs::is_config_job(&id);
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE jobs SET runs_posted = max(runs_posted, ?2) WHERE id = ?1",
                params![id, run],
            )?;
            queue(&tx, OutboxKind::Result, [&body])?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        if wake {
            self.outbox_added.notify_one();
        }
        Ok(())
    }

    /// Ends a job and queues its result, in one transaction: a result is never lost and a
    /// job never stays `RUNNING` once its result exists.
    pub(crate) async fn finish(&self, result: &JobResult) -> Result<(), StoreError> {
        self.finish_many(vec![result.clone()]).await
    }

    /// Ends a job, queues its result and drops the command's `data` (the chunk of a `put_file`,
    /// written or refused), in one transaction. The ledger keeps commands for [`KEEP_FINISHED`];
    /// with their chunks (up to ~6 MB each) it would hold a copy of every file uploaded that
    /// week. Not dropped earlier: a command not finished is dispatched again at start-up, and
    /// must still have its chunk.
    pub(crate) async fn finish_forgetting_data(
        &self,
        result: &JobResult,
    ) -> Result<(), StoreError> {
        self.end(vec![result.clone()], true).await
    }

    /// Ends several jobs and queues their results, all in one transaction.
    pub(crate) async fn finish_many(&self, results: Vec<JobResult>) -> Result<(), StoreError> {
        self.end(results, false).await
    }

    /// Ends jobs and queues their results in one transaction; with `forget_data`, their commands'
    /// `data` is dropped in it too.
    async fn end(&self, results: Vec<JobResult>, forget_data: bool) -> Result<(), StoreError> {
        let ended = results
            .iter()
            .map(Ended::of)
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.call(move |conn| {
            let tx = conn.transaction()?;
            if forget_data {
                let mut forget = tx.prepare_cached(
                    "UPDATE jobs SET command = json_remove(command, '$.data') WHERE id = ?1",
                )?;
                for e in &ended {
                    forget.execute([&e.id])?;
                }
            }
            end_jobs(&tx, &ended, schemas::now_ms())?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.outbox_added.notify_one();
        Ok(())
    }

    /// Jobs not finished, in the order they were received.
    pub(crate) async fn unfinished(&self) -> Result<Vec<Unfinished>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, command, state, pid, pid_start_time, started_ms, runs, runs_posted FROM jobs WHERE finished IS NULL
                 ORDER BY received_ms, rowid",
            )?;
            let rows = stmt.query_map([], Unfinished::from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The state of one job, if it is known.
    #[cfg(test)]
    pub(crate) async fn job_state(&self, id: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;

        let id = id.to_owned();
        self.call(move |conn| {
            Ok(conn
                .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .optional()?)
        })
        .await
    }

    /// The stored JSON of a command (tests).
    #[cfg(test)]
    pub(crate) async fn stored_command(&self, id: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        let id = id.to_owned();
        self.call(move |conn| {
            Ok(conn
                .query_row("SELECT command FROM jobs WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .optional()?)
        })
        .await
    }

    /// Forgets jobs that finished before `before_ms`. Returns how many.
    pub(crate) async fn prune(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute(
                "DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?1",
                [before_ms],
            )?)
        })
        .await
    }

    /// Prunes finished jobs older than [`KEEP_FINISHED`] every hour until `shutdown`.
    pub(crate) async fn prune_periodically(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let before = schemas::now_ms().saturating_sub(KEEP_FINISHED.as_millis() as u64);
            match self.prune(before).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(jobs = n, "pruned finished jobs"),
                Err(e) => tracing::warn!(error = %e, "cannot prune finished jobs"),
            }
        }
    }
}
