//! The durable outbox: what still has to reach the controller (`kind` = `result`, `output`,
//! `logs` or `stats`), read oldest first by the uploader and deleted once delivered.
//!
//! `seq` is `INTEGER PRIMARY KEY AUTOINCREMENT`: SQLite never hands out a value again, not even
//! after the table was emptied (`sqlite_sequence` keeps the highest), so it only grows for the
//! life of `agent.db`. Live output batches take it as their `seq` (see
//! [`crate::live::forwarder`]).

use rusqlite::params;

use super::{Store, StoreError};

/// What the outbox holds; the uploader posts each kind to its own path, results first (they
/// unblock clients; the live output queued before a result goes just before it), the others
/// taking turns (see [`crate::link::uploader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutboxKind {
    /// One job result (a JSON object) per row.
    Result,
    /// Log messages for `POST …/logs`; a row is one JSON value (a message or an array of them).
    Logs,
    /// Stats batches for `POST …/stats`; a row is one batch.
    Stats,
    /// Live output for `POST …/output`; a row is one job's lines (see [`crate::live`]).
    Output,
}

impl OutboxKind {
    /// The name in the `kind` column, and the last segment of the controller path it goes to.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Result => "result",
            OutboxKind::Logs => "logs",
            OutboxKind::Stats => "stats",
            OutboxKind::Output => "output",
        }
    }
}

/// One queued message: its sequence number and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxRow {
    pub(crate) seq: i64,
    pub(crate) body: String,
}

impl Store {
    /// Queues messages of one kind (each a JSON value as text) in one transaction.
    pub(crate) async fn outbox_push(
        &self,
        kind: OutboxKind,
        bodies: Vec<String>,
    ) -> Result<(), StoreError> {
        self.outbox_push_numbered(kind, bodies).await.map(drop)
    }

    /// [`Store::outbox_push`], answering the `seq` of each row.
    pub(crate) async fn outbox_push_numbered(
        &self,
        kind: OutboxKind,
        bodies: Vec<String>,
    ) -> Result<Vec<i64>, StoreError> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let seqs = self
            .call(move |conn| {
                let tx = conn.transaction()?;
                let seqs = queue(&tx, kind, &bodies)?;
                tx.commit()?;
                Ok(seqs)
            })
            .await?;
        self.outbox_added.notify_one();
        Ok(seqs)
    }

    /// Deletes the `settled` rows, then picks what the uploader sends next, in one call on the
    /// store's thread (one hop there and back a batch, not one a query): up to `limit` results,
    /// or first the live output queued before them; else up to `limit` rows of the first kind
    /// in `turns` that has some. `None`: nothing is queued.
    pub(crate) async fn outbox_next(
        &self,
        settled: Vec<i64>,
        turns: Vec<OutboxKind>,
        limit: usize,
    ) -> Result<Option<NextBatch>, StoreError> {
        self.call(move |conn| {
            if !settled.is_empty() {
                delete(conn, &settled)?;
            }
            let results = select(conn, OutboxKind::Result, i64::MAX, limit)?;
            if let Some(last) = results.last() {
                let before = select(conn, OutboxKind::Output, last.seq, limit)?;
                let (kind, rows) = match before.is_empty() {
                    true => (OutboxKind::Result, results),
                    false => (OutboxKind::Output, before),
                };
                return Ok(Some(NextBatch {
                    kind,
                    rows,
                    turn: false,
                }));
            }
            for kind in turns {
                let rows = select(conn, kind, i64::MAX, limit)?;
                if !rows.is_empty() {
                    return Ok(Some(NextBatch {
                        kind,
                        rows,
                        turn: true,
                    }));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Up to `limit` queued messages of one kind, oldest first (tests).
    #[cfg(test)]
    pub(crate) async fn outbox_take(
        &self,
        kind: OutboxKind,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.call(move |conn| Ok(select(conn, kind, i64::MAX, limit)?))
            .await
    }

    /// Replaces the body of a queued message (a result the controller refused, by an error).
    pub(crate) async fn outbox_replace(&self, seq: i64, body: String) -> Result<(), StoreError> {
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
    pub(crate) async fn outbox_delete(&self, seqs: Vec<i64>) -> Result<(), StoreError> {
        self.call(move |conn| Ok(delete(conn, &seqs)?)).await
    }

    /// The `seq` and size in bytes of every queued message of one kind, oldest first.
    pub(crate) async fn outbox_sizes(
        &self,
        kind: OutboxKind,
    ) -> Result<Vec<(i64, usize)>, StoreError> {
        self.call(move |conn| {
            // As a blob, `length` counts bytes, not characters.
            let mut stmt = conn.prepare_cached(
                "SELECT seq, length(CAST(body AS BLOB)) FROM outbox WHERE kind = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([kind.as_str()], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })?;
            let rows = rows.collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .map(|(seq, bytes)| (seq, usize::try_from(bytes).unwrap_or(0)))
                .collect())
        })
        .await
    }

    /// Deletes the queued messages of one kind whose body begins with one of `prefixes`;
    /// answers how many.
    pub(crate) async fn outbox_delete_prefixed(
        &self,
        kind: OutboxKind,
        prefixes: Vec<String>,
    ) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut deleted = 0;
            {
                // An exact comparison (`LIKE` would ignore the case and read `%`, `_`).
                let mut delete = tx.prepare_cached(
                    "DELETE FROM outbox WHERE kind = ?1 AND substr(body, 1, length(?2)) = ?2",
                )?;
                for prefix in prefixes {
                    deleted += delete.execute(params![kind.as_str(), prefix])?;
                }
            }
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    /// The `seq` of the oldest queued message of one kind, `None` when there is none.
    pub(crate) async fn outbox_oldest(&self, kind: OutboxKind) -> Result<Option<i64>, StoreError> {
        self.call(move |conn| {
            let oldest = conn
                .prepare_cached("SELECT min(seq) FROM outbox WHERE kind = ?1")?
                .query_row([kind.as_str()], |row| row.get(0))?;
            Ok(oldest)
        })
        .await
    }

    /// Resolves when rows were added to the outbox since the last call (or now, if some were).
    pub(crate) async fn outbox_added(&self) {
        self.outbox_added.notified().await;
    }
}

/// Adds rows of one kind to the outbox, inside the caller's transaction; answers their `seq`.
/// What the uploader sends next ([`Store::outbox_next`]).
#[derive(Debug)]
pub(crate) struct NextBatch {
    pub(crate) kind: OutboxKind,
    pub(crate) rows: Vec<OutboxRow>,
    /// Picked by its turn (not as results, or the output queued before them).
    pub(crate) turn: bool,
}

/// Up to `limit` queued rows of `kind` queued before the row `before`, oldest first.
fn select(
    conn: &rusqlite::Connection,
    kind: OutboxKind,
    before: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, body FROM outbox WHERE kind = ?1 AND seq < ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![kind.as_str(), before, limit as i64], |row| {
        Ok(OutboxRow {
            seq: row.get(0)?,
            body: row.get(1)?,
        })
    })?;
    rows.collect()
}

/// Deletes rows in one transaction.
fn delete(conn: &mut rusqlite::Connection, seqs: &[i64]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
        for seq in seqs {
            delete.execute([seq])?;
        }
    }
    tx.commit()
}

pub(super) fn queue<'a>(
    tx: &rusqlite::Transaction<'_>,
    kind: OutboxKind,
    bodies: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<i64>, rusqlite::Error> {
    let mut insert = tx.prepare_cached("INSERT INTO outbox (kind, body) VALUES (?1, ?2)")?;
    let mut seqs = Vec::new();
    for body in bodies {
        insert.execute(params![kind.as_str(), body])?;
        seqs.push(tx.last_insert_rowid());
    }
    Ok(seqs)
}
