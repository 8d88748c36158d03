//! The agent's durable state: SQLite in `<data_dir>/agent.db`, owned by one thread.
//!
//! - [`jobs`]: every command received (raw JSON, state, times, pid). Its primary key is the set of
//!   job ids already seen, so a command delivered twice is stored, and run, once.
//! - [`outbox`]: what still has to reach the controller (`kind` = `result`, `output`, `logs` or
//!   `stats`); its `seq` only grows, also across an emptied table.
//!   A result goes in shortened to [`result_limit::RESULT_LIMIT`], so the controller can take it.
//!
//! [`Store`] is a cheap handle; each method sends a closure to the database thread over a bounded
//! channel and awaits its answer, so SQLite never blocks the async runtime. Changes that must
//! happen together (finishing a job and queueing its result) are one transaction. This module
//! opens the database and brings its schema up to date; the methods are in `jobs` and `outbox`.

pub(crate) mod config_jobs;
pub(crate) mod jobs;
pub(crate) mod outbox;
pub(crate) mod result_limit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, Notify};

pub(crate) use config_jobs::StoredConfigJob;
pub(crate) use jobs::{Received, Started, Unfinished};
pub(crate) use outbox::{OutboxKind, OutboxRow};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    started_ms INTEGER,
    pid INTEGER,
    pid_start_time INTEGER,
    finished INTEGER,
    runs INTEGER NOT NULL DEFAULT 0,
    runs_posted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs(finished);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox(kind, seq);
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot encode a result: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot start the database thread: {0}")]
    Thread(std::io::Error),
    #[error("the database thread has stopped")]
    Closed,
}

type Task = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the database thread. Clones share the thread, which ends when the last is dropped.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Task>,
    outbox_added: Arc<Notify>,
}

impl Store {
    /// Opens (creating if needed) the database and starts its thread.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let (tx, mut rx) = mpsc::channel::<Task>(256);
        let (opened_tx, opened_rx) = oneshot::channel();
        let owned = path.to_owned();
        std::thread::Builder::new()
            .name("jsagent-store".into())
            .spawn(move || {
                let mut conn = match open_connection(&owned) {
                    Ok(conn) => conn,
                    Err(source) => {
                        let _ = opened_tx.send(Err(StoreError::Open {
                            path: owned,
                            source,
                        }));
                        return;
                    }
                };
                let _ = opened_tx.send(Ok(()));
                while let Some(task) = rx.blocking_recv() {
                    task(&mut conn);
                }
            })
            .map_err(StoreError::Thread)?;
        opened_rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Store {
            tx,
            outbox_added: Arc::new(Notify::new()),
        })
    }

    /// Runs `f` on the database thread and returns its answer.
    async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task: Task = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.tx.send(task).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn open_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Columns added to `jobs` after its first version, in the order they were added. Both came
/// with recurring and restarted jobs: how many times the job's process was started, and the
/// last run whose result was queued.
const ADDED_COLUMNS: [&str; 2] = ["runs", "runs_posted"];

/// Brings a database of an older agent up to [`SCHEMA`].
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    for column in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('jobs') WHERE name = ?1",
            [column],
            |row| row.get(0),
        )?;
        if !present {
            conn.execute_batch(&format!(
                "ALTER TABLE jobs ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
