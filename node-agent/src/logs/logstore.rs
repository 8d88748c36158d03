//! The log store (DESIGN §6): every stored message of every job, in SQLite files under
//! `<data_dir>/logs`, owned by one thread.
//!
//! - One table `logs (id, jobid, domain, name, epoch, level, data)`, indexed for the `get_msgs`
//!   filters: `(jobid, id)` and `(epoch)`. WAL mode; appends queued together are written in one
//!   transaction, so the cost per line stays small under a flood.
//! - Rotation: when `current.db` reaches `log_db_max_size` it becomes `<epoch ms>.db` (switched
//!   out of WAL mode first, so it is one self-contained file) and a new `current.db` starts; only
//!   the newest `log_db_keep` rotated files are kept.
//! - `id` is assigned here, to every message handed in (stored or only forwarded), in the order
//!   they arrive; it never goes down: at start it continues after the largest id on disk and is
//!   at least `now_ms × 1000`, so it keeps increasing even if the files were deleted.
//! - Messages to forward are handed, with their ids, to the forwarder's bounded channel once
//!   written: a forwarder that lags slows the store, which slows the readers, which slows the
//!   processes through their pipes — nothing is dropped.
//!
//! [`LogStore`] is a cheap handle; `append` waits for room in the bounded channel, which is the
//! backpressure the readers of process output feel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params_from_iter, Connection, OpenFlags};
use schemas::LogMessage;
use tokio::sync::{mpsc, oneshot};

pub(crate) use query::Query;
use query::{select, where_clause};

mod query;

/// Most messages `get_msgs` answers.
pub(crate) const GET_LIMIT: usize = 1000;
/// `get_msgs` stops reading once the messages it holds pass this many bytes: 1000 messages of
/// 1 MiB would not fit in a result anyway, and would take a GiB of memory. Being over the
/// result limit, the answer is then shortened to its newest messages, which says so.
pub(crate) const GET_MAX_BYTES: usize = crate::store::result_limit::RESULT_LIMIT;
/// Queued appends written in one transaction, at most.
const MAX_TX_ROWS: usize = 20_000;
/// Queued operations; a full queue makes `append` wait.
const QUEUE: usize = 64;
pub(crate) const CURRENT: &str = "current.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    jobid TEXT NOT NULL,
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    level INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_jobid ON logs(jobid, id);
CREATE INDEX IF NOT EXISTS logs_epoch ON logs(epoch);
";

/// The job a message comes from; shared by its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) jobid: String,
    pub(crate) domain: String,
    pub(crate) name: String,
}

/// A message to store and/or forward; the store gives it its id.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) source: Arc<Source>,
    pub(crate) epoch: u64,
    pub(crate) level: u8,
    pub(crate) data: String,
    /// Written to the store (`loglevels_db`).
    pub(crate) store: bool,
    /// Handed to the forwarder (`loglevels_ac`).
    pub(crate) forward: bool,
}

/// What the store hands the forwarder.
#[derive(Debug)]
pub(crate) enum Forwarded {
    Messages(Vec<LogMessage>),
    /// Push what is pending to the outbox, then answer.
    Flush(oneshot::Sender<()>),
}

/// Where the files are and when they rotate.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) dir: PathBuf,
    pub(crate) max_size: u64,
    pub(crate) keep: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("cannot open the log store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("log store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("log store files: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot start the log store thread: {0}")]
    Thread(std::io::Error),
    #[error("the log store has stopped")]
    Closed,
}

enum Op {
    Append(Vec<Entry>),
    Get(
        Query,
        oneshot::Sender<Result<Vec<LogMessage>, LogStoreError>>,
    ),
    Delete(Query, oneshot::Sender<Result<u64, LogStoreError>>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the log store thread; it ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct LogStore {
    tx: mpsc::Sender<Op>,
}

impl LogStore {
    /// Opens (creating) `settings.dir/current.db` and starts the thread. Messages marked
    /// `forward` go to `forward` once written.
    pub(crate) async fn open(
        settings: Settings,
        forward: Option<mpsc::Sender<Forwarded>>,
    ) -> Result<LogStore, LogStoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (opened_tx, opened_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("jsagent-logstore".into())
            .spawn(move || match Db::open(settings, forward) {
                Ok(db) => {
                    let _ = opened_tx.send(Ok(()));
                    db.serve(rx);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })
            .map_err(LogStoreError::Thread)?;
        opened_rx.await.map_err(|_| LogStoreError::Closed)??;
        Ok(LogStore { tx })
    }

    /// Queues messages; waits while the store is behind (backpressure).
    pub(crate) async fn append(&self, entries: Vec<Entry>) -> Result<(), LogStoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Op::Append(entries))
            .await
            .map_err(|_| LogStoreError::Closed)
    }

    /// The newest [`GET_LIMIT`] matches (fewer once they pass [`GET_MAX_BYTES`]), oldest first,
    /// from the current file then older ones.
    pub(crate) async fn get_msgs(&self, query: Query) -> Result<Vec<LogMessage>, LogStoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Get(query, reply)).await?;
        answer.await.map_err(|_| LogStoreError::Closed)?
    }

    /// Deletes every match in every file; returns how many.
    pub(crate) async fn del_msgs(&self, query: Query) -> Result<u64, LogStoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Delete(query, reply)).await?;
        answer.await.map_err(|_| LogStoreError::Closed)?
    }

    /// Resolves once everything appended before is written and forwarded (and the forwarder
    /// has pushed it to the outbox).
    pub(crate) async fn flush(&self) -> Result<(), LogStoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Flush(reply)).await?;
        answer.await.map_err(|_| LogStoreError::Closed)
    }

    async fn send(&self, op: Op) -> Result<(), LogStoreError> {
        self.tx.send(op).await.map_err(|_| LogStoreError::Closed)
    }
}

/// The thread's side: the open current file and the rotation rules.
struct Db {
    settings: Settings,
    conn: Connection,
    next_id: u64,
    forward: Option<mpsc::Sender<Forwarded>>,
}

impl Db {
    fn open(
        settings: Settings,
        forward: Option<mpsc::Sender<Forwarded>>,
    ) -> Result<Db, LogStoreError> {
        std::fs::create_dir_all(&settings.dir)?;
        let conn = open_current(&settings.dir)?;
        let mut next_id = max_id(&conn)? + 1;
        if let Some(newest) = rotated_files(&settings.dir)?.last() {
            let old = Connection::open_with_flags(newest, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            next_id = next_id.max(max_id(&old)? + 1);
        }
        next_id = next_id.max(schemas::now_ms().saturating_mul(1000));
        Ok(Db {
            settings,
            conn,
            next_id,
            forward,
        })
    }

    fn serve(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(first) = rx.blocking_recv() {
            let mut op = Some(first);
            while let Some(current) = op.take() {
                let Op::Append(mut entries) = current else {
                    self.serve_one(current);
                    continue;
                };
                // Appends queued together are written together; another op waits for them.
                while entries.len() < MAX_TX_ROWS {
                    match rx.try_recv() {
                        Ok(Op::Append(more)) => entries.extend(more),
                        Ok(other) => {
                            op = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.append(entries);
            }
        }
    }

    fn serve_one(&mut self, op: Op) {
        match op {
            Op::Append(entries) => self.append(entries),
            Op::Get(query, reply) => {
                let _ = reply.send(self.get(&query));
            }
            Op::Delete(query, reply) => {
                let _ = reply.send(self.delete(&query));
            }
            Op::Flush(reply) => match &self.forward {
                Some(forward) => {
                    if let Err(mpsc::error::SendError(Forwarded::Flush(reply))) =
                        forward.blocking_send(Forwarded::Flush(reply))
                    {
                        let _ = reply.send(());
                    }
                }
                None => {
                    let _ = reply.send(());
                }
            },
        }
    }

    fn append(&mut self, entries: Vec<Entry>) {
        let first = self.next_id;
        self.next_id += entries.len() as u64;
        if let Err(e) = self.insert(&entries, first) {
            tracing::error!(error = %e, messages = entries.len(), "cannot store log messages");
        }
        self.forward(entries, first);
        match self.size() {
            Ok(size) if size >= self.settings.max_size => {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "cannot rotate the log store");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the log store's size"),
        }
    }

    fn insert(&mut self, entries: &[Entry], first: u64) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO logs (id, jobid, domain, name, epoch, level, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (id, e) in (first..).zip(entries).filter(|(_, e)| e.store) {
                let s = &e.source;
                insert.execute(rusqlite::params![
                    id, s.jobid, s.domain, s.name, e.epoch, e.level, e.data
                ])?;
            }
        }
        tx.commit()
    }

    fn forward(&self, entries: Vec<Entry>, first: u64) {
        let Some(forward) = &self.forward else {
            return;
        };
        let messages: Vec<LogMessage> = (first..)
            .zip(entries)
            .filter(|(_, e)| e.forward)
            .map(|(id, e)| LogMessage {
                id,
                jobid: e.source.jobid.clone(),
                domain: e.source.domain.clone(),
                name: e.source.name.clone(),
                epoch: e.epoch,
                level: e.level,
                data: e.data,
            })
            .collect();
        if !messages.is_empty()
            && forward
                .blocking_send(Forwarded::Messages(messages))
                .is_err()
        {
            tracing::warn!("the log forwarder has stopped; messages are not forwarded");
        }
    }

    fn size(&self) -> Result<u64, rusqlite::Error> {
        self.conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |row| row.get(0),
        )
    }

    /// `current.db` becomes `<epoch>.db`; a new `current.db` starts; the oldest files go.
    fn rotate(&mut self) -> Result<(), LogStoreError> {
        // A self-contained file: everything checkpointed, no -wal or -shm left beside it.
        self.conn.pragma_update(None, "journal_mode", "DELETE")?;
        let old = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        let closed = old.close().map_err(|(_, e)| LogStoreError::from(e));
        let renamed = closed.and_then(|()| {
            let mut epoch = schemas::now_ms();
            while self.settings.dir.join(format!("{epoch}.db")).exists() {
                epoch += 1;
            }
            let to = self.settings.dir.join(format!("{epoch}.db"));
            std::fs::rename(self.settings.dir.join(CURRENT), &to)?;
            tracing::info!(file = %to.display(), "rotated the log store");
            Ok(())
        });
        // Whatever happened, keep a working current file.
        self.conn = open_current(&self.settings.dir)?;
        renamed?;
        self.prune()
    }

    fn prune(&self) -> Result<(), LogStoreError> {
        let files = rotated_files(&self.settings.dir)?;
        let extra = files.len().saturating_sub(self.settings.keep as usize);
        for old in &files[..extra] {
            std::fs::remove_file(old)?;
            tracing::info!(file = %old.display(), "removed an old log file");
        }
        Ok(())
    }

    fn get(&self, query: &Query) -> Result<Vec<LogMessage>, LogStoreError> {
        let mut bytes_left = GET_MAX_BYTES;
        let mut newest_first = select(&self.conn, query, GET_LIMIT, &mut bytes_left)?;
        for file in rotated_files(&self.settings.dir)?.iter().rev() {
            if newest_first.len() >= GET_LIMIT || bytes_left == 0 {
                break;
            }
            let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let limit = GET_LIMIT - newest_first.len();
            newest_first.extend(select(&conn, query, limit, &mut bytes_left)?);
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    fn delete(&self, query: &Query) -> Result<u64, LogStoreError> {
        let (clause, values) = where_clause(query);
        let sql = format!("DELETE FROM logs WHERE {clause}");
        let mut deleted = self.conn.execute(&sql, params_from_iter(&values))? as u64;
        for file in rotated_files(&self.settings.dir)? {
            let conn = Connection::open(&file)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            deleted += conn.execute(&sql, params_from_iter(&values))? as u64;
        }
        Ok(deleted)
    }
}

fn open_current(dir: &Path) -> Result<Connection, LogStoreError> {
    let path = dir.join(CURRENT);
    let open = || -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    };
    open().map_err(|source| LogStoreError::Open {
        path: path.clone(),
        source,
    })
}

fn max_id(conn: &Connection) -> Result<u64, rusqlite::Error> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM logs", [], |row| {
        row.get(0)
    })
}

/// Rotated files (`<epoch>.db`), oldest first.
pub(crate) fn rotated_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let epoch = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".db"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(epoch) = epoch {
            files.push((epoch, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests;
