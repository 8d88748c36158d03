//! The stored side of config-file jobs ([`crate::config::jobs`]): the agent finds its `cfg:`
//! jobs at boot, finished or not, and (re)opens each job of the config with the table's
//! current command. A job's run count is kept across its reopenings, so its runs stay numbered
//! in order for the controller, which records a run once per number.

use rusqlite::params;
use schemas::JobState;

use super::{Store, StoreError, Unfinished};
use crate::config::jobs::ID_PREFIX;

/// A config job as a previous run of the agent left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredConfigJob {
    pub(crate) job: Unfinished,
    /// It ended (killed, given up, or a daemon that exited 0).
    pub(crate) finished: bool,
}

impl Store {
    /// Every stored config job (id `cfg:…`), finished or not.
    pub(crate) async fn config_jobs(&self) -> Result<Vec<StoredConfigJob>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, command, state, pid, pid_start_time, started_ms, runs, runs_posted,
                        finished IS NOT NULL
                 FROM jobs WHERE substr(id, 1, ?1) = ?2 ORDER BY received_ms, rowid",
            )?;
            let rows = stmt.query_map(params![ID_PREFIX.len(), ID_PREFIX], |row| {
                Ok(StoredConfigJob {
                    job: Unfinished::from_row(row)?,
                    finished: row.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Stores config job `id` with the command `raw`, `QUEUED` and not finished: a new row, or
    /// the old one with its run counts kept. Returns the runs started so far.
    pub(crate) async fn open_config_job(&self, id: &str, raw: &str) -> Result<u64, StoreError> {
        let (id, raw) = (id.to_owned(), raw.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO jobs (id, command, state, received_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET command = ?2, state = ?3, finished = NULL,
                    pid = NULL, pid_start_time = NULL",
                params![id, raw, JobState::Queued.as_str(), schemas::now_ms()],
            )?;
            let runs = tx.query_row("SELECT runs FROM jobs WHERE id = ?1", [&id], |row| {
                row.get(0)
            })?;
            tx.commit()?;
            Ok(runs)
        })
        .await
    }

    /// Replaces the command of an unfinished config job whose table changed; its state, process
    /// and runs stay.
    pub(crate) async fn replace_command(&self, id: &str, raw: &str) -> Result<(), StoreError> {
        let (id, raw) = (id.to_owned(), raw.to_owned());
        self.call(move |conn| {
            conn.execute(
                "UPDATE jobs SET command = ?2 WHERE id = ?1",
                params![id, raw],
            )?;
            Ok(())
        })
        .await
    }
}
