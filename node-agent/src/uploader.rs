//! The uploader (DESIGN §5.3, §6): posts the outbox (results, then stats, then logs) to the controller, oldest first,
//! up to [`BATCH`] per request, and deletes them only once the controller answered 2xx (every
//! item of a 2xx array answer is settled; refused ones are logged). Failures follow the agent
//! retry rules of docs/protocol.md: back off and retry; a 413 splits the batch in halves, and a
//! single result still too large is dropped with an ERROR.
//!
//! Woken when results are queued, and every [`TICK`] regardless. When stopped it makes one last
//! attempt to empty the outbox, bounded by [`FINAL_FLUSH`]; what is left is sent after the
//! next start.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::controller::{Controller, ControllerError};
use crate::store::{OutboxKind, OutboxRow, Store, StoreError};

/// Most results per request.
pub const BATCH: usize = 100;
/// Look at the outbox at least this often.
const TICK: Duration = Duration::from_secs(10);
/// Longest final flush when the agent stops.
pub const FINAL_FLUSH: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

pub struct Uploader {
    store: Store,
    controller: Controller,
    token_source: String,
}

impl Uploader {
    pub fn new(store: Store, controller: Controller, token_source: String) -> Uploader {
        Uploader {
            store,
            controller,
            token_source,
        }
    }

    /// Uploads until `stop`, then flushes once more (at most [`FINAL_FLUSH`]).
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let sent = tokio::select! {
                _ = stop.cancelled() => break,
                sent = self.upload_pending() => sent,
            };
            match sent {
                Ok(()) => {
                    backoff.reset();
                    tokio::select! {
                        _ = self.store.outbox_added() => {}
                        _ = tokio::time::sleep(TICK) => {}
                        _ = stop.cancelled() => break,
                    }
                }
                Err(e) => {
                    self.report(&e);
                    tokio::select! {
                        _ = backoff.wait() => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        }
        match tokio::time::timeout(FINAL_FLUSH, self.upload_pending()).await {
            Ok(Ok(())) => tracing::debug!("outbox flushed"),
            Ok(Err(e)) => self.report(&e),
            Err(_) => {
                tracing::warn!("results left in the outbox will be sent after the next start")
            }
        }
    }

    /// Sends batches until the outbox is empty: after each batch it looks again from the first
    /// kind, so results (then stats) never wait behind a flood of logs.
    async fn upload_pending(&self) -> Result<(), UploadError> {
        'again: loop {
            for kind in OutboxKind::ALL {
                let rows = self.store.outbox_take(kind, BATCH).await?;
                if !rows.is_empty() {
                    self.send(kind, rows).await?;
                    continue 'again;
                }
            }
            return Ok(());
        }
    }

    /// Posts rows, splitting on 413, and deletes what the controller settled.
    async fn send(&self, kind: OutboxKind, rows: Vec<OutboxRow>) -> Result<(), UploadError> {
        let mut batches = vec![rows];
        while let Some(mut batch) = batches.pop() {
            let bodies: Vec<&str> = batch.iter().map(|r| r.body.as_str()).collect();
            let posted = match kind {
                OutboxKind::Result => self.controller.post_results(&bodies).await.map(|outcome| {
                    for rejected in &outcome.rejected {
                        tracing::warn!(id = %rejected.id, error = %rejected.error, message = %rejected.message,
                            "the controller rejected a result; it is dropped");
                    }
                }),
                OutboxKind::Logs | OutboxKind::Stats => {
                    self.controller.post_items(kind, &bodies).await
                }
            };
            match posted {
                Ok(()) => {}
                Err(ControllerError::TooLarge) if batch.len() > 1 => {
                    let second = batch.split_off(batch.len() / 2);
                    batches.push(second);
                    batches.push(batch);
                    continue;
                }
                Err(ControllerError::TooLarge) => {
                    tracing::error!(
                        kind = kind.as_str(),
                        bytes = bodies[0].len(),
                        "an item is too large for the controller; it is dropped"
                    );
                }
                // Logs and stats the controller refuses (a bad item, an older controller without
                // the path) would block the outbox for ever; results are refused item by item.
                Err(ControllerError::Rejected { status, body }) if kind != OutboxKind::Result => {
                    tracing::warn!(kind = kind.as_str(), %status, %body, items = batch.len(),
                        "the controller rejected a batch; it is dropped");
                }
                Err(e) => return Err(e.into()),
            }
            self.store
                .outbox_delete(batch.iter().map(|r| r.seq).collect())
                .await?;
        }
        Ok(())
    }

    fn report(&self, e: &UploadError) {
        match e {
            UploadError::Controller(e) => e.log("post the outbox", &self.token_source),
            UploadError::Store(e) => tracing::error!(error = %e, "cannot read the outbox"),
        }
    }
}
