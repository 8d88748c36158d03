//! The durable outbox: what still has to reach the controller (`kind` = `result`, `logs` or
//! `stats`), read oldest first by the uploader and deleted once delivered.

use rusqlite::params;

use super::{Store, StoreError};

/// What the outbox holds; the uploader posts each kind to its own path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutboxKind {
    /// One job result (a JSON object) per row.
    Result,
    /// Log messages for `POST …/logs`; a row is one JSON value (a message or an array of them).
    Logs,
    /// Stats batches for `POST …/stats`; a row is one batch.
    Stats,
}

impl OutboxKind {
    /// Every kind, in the order the uploader serves them: results first, they unblock clients.
    pub(crate) const ALL: [OutboxKind; 3] =
        [OutboxKind::Result, OutboxKind::Stats, OutboxKind::Logs];

    /// The name in the `kind` column, and the last segment of the controller path it goes to.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Result => "result",
            OutboxKind::Logs => "logs",
            OutboxKind::Stats => "stats",
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
    pub(crate) async fn outbox_take(
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
    pub(crate) async fn outbox_added(&self) {
        self.outbox_added.notified().await;
    }
}

/// Adds rows of one kind to the outbox, inside the caller's transaction.
pub(super) fn queue<'a>(
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
