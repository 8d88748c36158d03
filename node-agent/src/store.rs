//! The agent's durable state: SQLite in `<data_dir>/agent.db`, owned by one thread.
//!
//! - `jobs`: every command received (raw JSON, state, times, pid). Its primary key is the set of
//!   job ids already seen, so a command delivered twice is stored, and run, once.
//! - `outbox`: what still has to reach the controller (`kind` = `result`, `logs` or `stats`).
//!   A result goes in shortened to [`result_limit::RESULT_LIMIT`], so the controller can take it.
//!
//! [`Store`] is a cheap handle; each method sends a closure to the database thread over a bounded
//! channel and awaits its answer, so SQLite never blocks the async runtime. Changes that must
//! happen together (finishing a job and queueing its result) are one transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use schemas::{JobResult, JobState};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::result_limit;

/// Finished jobs are forgotten (and their ids may be reused) after this long.
pub const KEEP_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

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
";

/// What the outbox holds; the uploader posts each kind to its own path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// One job result (a JSON object) per row.
    Result,
    /// Log messages for `POST …/logs`; a row is one JSON value (a message or an array of them).
    Logs,
    /// Stats batches for `POST …/stats`; a row is one batch.
    Stats,
}

impl OutboxKind {
    /// Every kind, in the order the uploader serves them: results first, they unblock clients.
    pub const ALL: [OutboxKind; 3] = [OutboxKind::Result, OutboxKind::Stats, OutboxKind::Logs];

    /// The name in the `kind` column, and the last segment of the controller path it goes to.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Result => "result",
            OutboxKind::Logs => "logs",
            OutboxKind::Stats => "stats",
        }
    }
}

/// One queued message: its sequence number and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub body: String,
}

/// A command as received: its id and the raw JSON, stored before it is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub raw: String,
}

/// A job that has not finished: found at start-up, after the agent stopped or died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub id: String,
    pub raw: String,
    pub state: String,
    pub pid: Option<u32>,
    pub pid_start_time: Option<u64>,
    /// When its last run started (ms since the epoch), if it started.
    pub started_ms: Option<u64>,
    /// How many times its process was started.
    pub runs: u64,
    /// The last run whose own result was queued (recurring jobs; see [`Store::run_result`]).
    pub runs_posted: u64,
}

/// Where a started job's process is, so a later agent can find (and kill) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub started_ms: u64,
    pub pid: u32,
    pub pid_start_time: Option<u64>,
}

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

    /// Stores received commands in one transaction, `QUEUED`. Returns, per command, whether it
    /// is new (`false`: its id was seen before and it must not run again).
    pub async fn receive(&self, batch: Vec<Received>) -> Result<Vec<bool>, StoreError> {
        let now = schemas::now_ms();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut new = Vec::with_capacity(batch.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO jobs (id, command, state, received_ms) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for r in &batch {
                    new.push(insert.execute(params![r.id, r.raw, JobState::Queued.as_str(), now])? == 1);
                }
            }
            tx.commit()?;
            Ok(new)
        })
        .await
    }

    /// Records, before its process is spawned, that run `run` (1 for the first) of a job is
    /// starting. A job found `RUNNING` after a crash may have run, so it is never started again
    /// (at most once) unless it is remembered (long-running, recurring).
    pub async fn starting(&self, id: &str, run: u64) -> Result<(), StoreError> {
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
    pub async fn start(&self, id: &str, started: Started) -> Result<(), StoreError> {
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
    pub async fn run_result(&self, result: &JobResult) -> Result<(), StoreError> {
        let body = result_limit::encode(result)?;
        let (id, run) = (result.id.clone(), result.run);
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
        self.outbox_added.notify_one();
        Ok(())
    }

    /// Ends a job and queues its result, in one transaction: a result is never lost and a
    /// job never stays `RUNNING` once its result exists.
    pub async fn finish(&self, result: &JobResult) -> Result<(), StoreError> {
        self.finish_many(vec![result.clone()]).await
    }

    /// Ends several jobs and queues their results, all in one transaction.
    pub async fn finish_many(&self, results: Vec<JobResult>) -> Result<(), StoreError> {
        let rows = results
            .iter()
            .map(|r| Ok((r.id.clone(), r.state, result_limit::encode(r)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut end =
                    tx.prepare_cached("UPDATE jobs SET state = ?2, finished = ?3 WHERE id = ?1")?;
                let now = schemas::now_ms();
                for (id, state, _) in &rows {
                    end.execute(params![id, state.as_str(), now])?;
                }
            }
            queue(
                &tx,
                OutboxKind::Result,
                rows.iter().map(|(_, _, body)| body),
            )?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.outbox_added.notify_one();
        Ok(())
    }

    /// Queues messages of one kind (each a JSON value as text) in one transaction.
    pub async fn outbox_push(
        &self,
        kind: OutboxKind,
        bodies: Vec<String>,
    ) -> Result<(), StoreError> {
        if bodies.is_empty() {
            return Ok(());
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            queue(&tx, kind, &bodies)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.outbox_added.notify_one();
        Ok(())
    }

    /// Up to `limit` queued messages of one kind, oldest first.
    pub async fn outbox_take(
        &self,
        kind: OutboxKind,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, body FROM outbox WHERE kind = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![kind.as_str(), limit as i64], |row| {
                Ok(OutboxRow {
                    seq: row.get(0)?,
                    body: row.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Replaces the body of a queued message (a result the controller refused, by an error).
    pub async fn outbox_replace(&self, seq: i64, body: String) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE outbox SET body = ?2 WHERE seq = ?1",
                params![seq, body],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes delivered (or undeliverable) messages.
    pub async fn outbox_delete(&self, seqs: Vec<i64>) -> Result<(), StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
                for seq in seqs {
                    delete.execute([seq])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Resolves when rows were added to the outbox since the last call (or now, if some were).
    pub async fn outbox_added(&self) {
        self.outbox_added.notified().await;
    }

    /// Jobs not finished, in the order they were received.
    pub async fn unfinished(&self) -> Result<Vec<Unfinished>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, command, state, pid, pid_start_time, started_ms, runs, runs_posted FROM jobs WHERE finished IS NULL
                 ORDER BY received_ms, rowid",
            )?;
            let rows = stmt.query_map([], |row| {
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
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The state of one job, if it is known.
    pub async fn job_state(&self, id: &str) -> Result<Option<String>, StoreError> {
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

    /// Forgets jobs that finished before `before_ms`. Returns how many.
    pub async fn prune(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute(
                "DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?1",
                [before_ms],
            )?)
        })
        .await
    }

    /// Prunes finished jobs older than [`KEEP_FINISHED`] every hour until `shutdown`.
    pub async fn prune_periodically(self, shutdown: CancellationToken) {
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

/// Adds rows of one kind to the outbox, inside the caller's transaction.
fn queue<'a>(
    tx: &rusqlite::Transaction<'_>,
    kind: OutboxKind,
    bodies: impl IntoIterator<Item = &'a String>,
) -> Result<(), rusqlite::Error> {
    let mut insert = tx.prepare_cached("INSERT INTO outbox (kind, body) VALUES (?1, ?2)")?;
    for body in bodies {
        insert.execute(params![kind.as_str(), body])?;
    }
    Ok(())
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
mod tests {
    use super::*;
    use serde_json::Value;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("jsagent-store-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn db(&self) -> PathBuf {
            self.0.join("agent.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn received(id: &str) -> Received {
        Received {
            id: id.into(),
            raw: format!(r#"{{"id":"{id}","gid":1,"nid":1,"cmd":"ping"}}"#),
        }
    }

    fn result(id: &str) -> JobResult {
        JobResult::new(id, 1, 1, "ping", Value::Null, JobState::Ok)
    }

    #[tokio::test]
    async fn a_seen_id_is_not_new_again() {
        let dir = TempDir::new("dedupe");
        let store = Store::open(&dir.db()).await.unwrap();
        assert_eq!(
            store
                .receive(vec![received("a"), received("b")])
                .await
                .unwrap(),
            [true, true]
        );
        assert_eq!(
            store
                .receive(vec![received("b"), received("c")])
                .await
                .unwrap(),
            [false, true]
        );
        // Still seen once finished: a late redelivery must not run the job again.
        store.finish(&result("a")).await.unwrap();
        assert_eq!(store.receive(vec![received("a")]).await.unwrap(), [false]);
    }

    #[tokio::test]
    async fn outbox_is_read_in_order_and_deleted_by_seq() {
        let dir = TempDir::new("outbox");
        let store = Store::open(&dir.db()).await.unwrap();
        for id in ["r1", "r2", "r3"] {
            store.finish(&result(id)).await.unwrap();
        }
        let rows = store.outbox_take(OutboxKind::Result, 2).await.unwrap();
        let ids: Vec<String> = rows.iter().map(|r| body_id(&r.body)).collect();
        assert_eq!(ids, ["r1", "r2"]);
        store.outbox_delete(vec![rows[0].seq]).await.unwrap();
        let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
        let ids: Vec<String> = rows.iter().map(|r| body_id(&r.body)).collect();
        assert_eq!(ids, ["r2", "r3"]);
    }

    fn body_id(body: &str) -> String {
        serde_json::from_str::<Value>(body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn finishing_ends_the_job_and_queues_its_result_together() {
        let dir = TempDir::new("finish");
        let store = Store::open(&dir.db()).await.unwrap();
        store.receive(vec![received("j")]).await.unwrap();
        let started = Started {
            started_ms: 5,
            pid: 42,
            pid_start_time: Some(7),
        };
        store.start("j", started).await.unwrap();
        assert_eq!(
            store.job_state("j").await.unwrap().as_deref(),
            Some("RUNNING")
        );
        let unfinished = store.unfinished().await.unwrap();
        assert_eq!(
            (unfinished[0].pid, unfinished[0].pid_start_time),
            (Some(42), Some(7))
        );

        store
            .finish(&JobResult::error("j", 1, 1, "execute", Value::Null, "boom"))
            .await
            .unwrap();
        assert_eq!(
            store.job_state("j").await.unwrap().as_deref(),
            Some("ERROR")
        );
        assert!(store.unfinished().await.unwrap().is_empty());
        assert_eq!(
            store
                .outbox_take(OutboxKind::Result, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // The uploader is woken.
        tokio::time::timeout(Duration::from_secs(1), store.outbox_added())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_finish_changes_nothing() {
        let dir = TempDir::new("atomic");
        let store = Store::open(&dir.db()).await.unwrap();
        store.receive(vec![received("j")]).await.unwrap();
        store
            .start(
                "j",
                Started {
                    started_ms: 1,
                    pid: 1,
                    pid_start_time: None,
                },
            )
            .await
            .unwrap();
        // Make the outbox insert fail inside the transaction.
        store
            .call(|conn| Ok(conn.execute_batch("CREATE TRIGGER no_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'full'); END;")?))
            .await
            .unwrap();
        assert!(store.finish(&result("j")).await.is_err());
        assert_eq!(
            store.job_state("j").await.unwrap().as_deref(),
            Some("RUNNING")
        );
    }

    #[tokio::test]
    async fn everything_survives_a_reopen() {
        let dir = TempDir::new("reopen");
        {
            let store = Store::open(&dir.db()).await.unwrap();
            store
                .receive(vec![received("q"), received("done")])
                .await
                .unwrap();
            store.finish(&result("done")).await.unwrap();
        }
        let store = Store::open(&dir.db()).await.unwrap();
        let unfinished = store.unfinished().await.unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(
            (unfinished[0].id.as_str(), unfinished[0].state.as_str()),
            ("q", "QUEUED")
        );
        assert_eq!(
            store
                .outbox_take(OutboxKind::Result, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store.receive(vec![received("done")]).await.unwrap(),
            [false]
        );
    }

    #[tokio::test]
    async fn a_run_result_records_its_run_as_posted() {
        let dir = TempDir::new("run-posted");
        let store = Store::open(&dir.db()).await.unwrap();
        store.receive(vec![received("r")]).await.unwrap();
        store.starting("r", 3).await.unwrap();
        let unposted = store.unfinished().await.unwrap();
        assert_eq!((unposted[0].runs, unposted[0].runs_posted), (3, 0));

        let mut run = result("r");
        run.run = 3;
        run.is_final = false;
        store.run_result(&run).await.unwrap();
        let posted = store.unfinished().await.unwrap();
        assert_eq!((posted[0].runs, posted[0].runs_posted), (3, 3));
        assert_eq!(
            posted[0].state, "RUNNING",
            "a run result does not end the job"
        );
        let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
    }

    /// A database made by the first agents (no `runs`, no `runs_posted`) opens, keeps its jobs
    /// and gains the columns.
    #[tokio::test]
    async fn a_database_of_an_older_agent_is_migrated() {
        let dir = TempDir::new("migrate");
        {
            let conn = Connection::open(dir.db()).unwrap();
            conn.execute_batch(
                "CREATE TABLE jobs (id TEXT PRIMARY KEY, command TEXT NOT NULL, state TEXT NOT NULL,
                    received_ms INTEGER NOT NULL, started_ms INTEGER, pid INTEGER,
                    pid_start_time INTEGER, finished INTEGER);
                 INSERT INTO jobs (id, command, state, received_ms) VALUES ('old', '{}', 'QUEUED', 1);",
            )
            .unwrap();
        }
        let store = Store::open(&dir.db()).await.unwrap();
        let unfinished = store.unfinished().await.unwrap();
        assert_eq!(
            (
                unfinished[0].id.as_str(),
                unfinished[0].runs,
                unfinished[0].runs_posted
            ),
            ("old", 0, 0)
        );
        store.starting("old", 1).await.unwrap();
        assert_eq!(store.unfinished().await.unwrap()[0].runs, 1);
    }

    #[tokio::test]
    async fn prune_forgets_only_old_finished_jobs() {
        let dir = TempDir::new("prune");
        let store = Store::open(&dir.db()).await.unwrap();
        store
            .receive(vec![received("old"), received("running")])
            .await
            .unwrap();
        store.finish(&result("old")).await.unwrap();
        assert_eq!(store.prune(schemas::now_ms() + 1000).await.unwrap(), 1);
        assert_eq!(store.job_state("old").await.unwrap(), None);
        assert_eq!(
            store.job_state("running").await.unwrap().as_deref(),
            Some("QUEUED")
        );
    }
}
