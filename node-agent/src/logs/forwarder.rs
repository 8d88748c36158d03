//! The log forwarder (DESIGN §6 logger): messages the log store marked for the controller
//! (`loglevels_ac`) are gathered into batches and pushed into the durable outbox, one outbox row
//! per batch (a JSON array of [`schemas::LogMessage`]); the uploader posts them.
//!
//! A batch is pushed when it holds `log_batch_size` messages or [`MAX_BATCH_BYTES`], when its
//! oldest message has waited `log_flush_interval`, on a flush request, and when the store
//! closes. The outbox is SQLite: a controller outage makes the outbox grow, not this task wait.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::logs::logstore::Forwarded;
use crate::store::{OutboxKind, Store, StoreError};

/// A batch is pushed once its JSON reaches this size, whatever its count.
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 20;
/// Wait before retrying a push the outbox refused.
const RETRY: Duration = Duration::from_secs(1);

pub(crate) struct Forwarder {
    outbox: Store,
    rx: mpsc::Receiver<Forwarded>,
    batch_size: usize,
    interval: Duration,
    /// Serialized messages of the batch being gathered, and their total size.
    pending: Vec<String>,
    bytes: usize,
}

impl Forwarder {
    pub(crate) fn new(
        outbox: Store,
        rx: mpsc::Receiver<Forwarded>,
        batch_size: usize,
        interval: Duration,
    ) -> Forwarder {
        Forwarder {
            outbox,
            rx,
            batch_size: batch_size.max(1),
            interval,
            pending: Vec::new(),
            bytes: 0,
        }
    }

    /// Runs until the log store closes its side, then pushes what is left.
    pub(crate) async fn run(mut self) {
        let mut deadline: Option<Instant> = None;
        loop {
            let wait = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                op = self.rx.recv() => match op {
                    None => break,
                    Some(Forwarded::Messages(messages)) => {
                        for m in &messages {
                            self.add(serde_json::to_string(m).expect("a log message serializes")).await;
                        }
                        if self.pending.is_empty() {
                            deadline = None;
                        } else if deadline.is_none() {
                            deadline = Some(Instant::now() + self.interval);
                        }
                    }
                    Some(Forwarded::Flush(reply)) => {
                        self.push().await;
                        deadline = None;
                        let _ = reply.send(());
                    }
                },
                _ = wait => {
                    self.push().await;
                    deadline = None;
                }
            }
        }
        self.push().await;
    }

    async fn add(&mut self, message: String) {
        self.bytes += message.len() + 1;
        self.pending.push(message);
        if self.pending.len() >= self.batch_size || self.bytes >= MAX_BATCH_BYTES {
            self.push().await;
        }
    }

    /// Pushes the pending batch as one outbox row; retries while the outbox is failing.
    async fn push(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let row = format!("[{}]", self.pending.join(","));
        loop {
            match self
                .outbox
                .outbox_push(OutboxKind::Logs, vec![row.clone()])
                .await
            {
                Ok(()) => break,
                Err(StoreError::Closed) => {
                    tracing::error!(
                        messages = self.pending.len(),
                        "the outbox is closed; log messages are not forwarded"
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot queue log messages; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        self.pending.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::LogMessage;
    use serde_json::Value;

    fn message(id: u64) -> LogMessage {
        LogMessage {
            id,
            jobid: "j".into(),
            domain: "d".into(),
            name: "n".into(),
            epoch: 1,
            level: 8,
            data: format!("m{id}"),
        }
    }

    async fn rows(store: &Store) -> Vec<Vec<u64>> {
        let rows = store.outbox_take(OutboxKind::Logs, 100).await.unwrap();
        rows.iter()
            .map(|r| {
                let batch: Vec<Value> = serde_json::from_str(&r.body).unwrap();
                batch.iter().map(|m| m["id"].as_u64().unwrap()).collect()
            })
            .collect()
    }

    fn start(
        kit: &crate::testkit::Kit,
        size: usize,
        interval: Duration,
    ) -> (mpsc::Sender<Forwarded>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(Forwarder::new(kit.store.clone(), rx, size, interval).run());
        (tx, task)
    }

    async fn flush(tx: &mpsc::Sender<Forwarded>) {
        let (reply, flushed) = tokio::sync::oneshot::channel();
        tx.send(Forwarded::Flush(reply)).await.unwrap();
        flushed.await.unwrap();
    }

    // Real time with an interval that never passes: the store's thread makes paused time jump.
    #[tokio::test]
    async fn full_batches_go_at_once_and_a_flush_or_the_end_pushes_the_rest() {
        let kit = crate::testkit::kit("forwarder-size").await;
        let (tx, task) = start(&kit, 3, Duration::from_secs(3600));
        tx.send(Forwarded::Messages((1..=4).map(message).collect()))
            .await
            .unwrap();
        tx.send(Forwarded::Messages(vec![message(5)]))
            .await
            .unwrap();
        while rows(&kit.store).await.is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(rows(&kit.store).await, [vec![1, 2, 3]]);
        flush(&tx).await;
        assert_eq!(rows(&kit.store).await, [vec![1, 2, 3], vec![4, 5]]);
        tx.send(Forwarded::Messages(vec![message(6)]))
            .await
            .unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(rows(&kit.store).await.last().unwrap(), &vec![6]);
        std::fs::remove_dir_all(kit.dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_goes_after_the_flush_interval() {
        let kit = crate::testkit::kit("forwarder-time").await;
        let (tx, _task) = start(&kit, 1000, Duration::from_secs(5));
        tx.send(Forwarded::Messages(vec![message(1)]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        for _ in 0..1000 {
            if !rows(&kit.store).await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rows(&kit.store).await, [vec![1]]);
        std::fs::remove_dir_all(kit.dir).unwrap();
    }
}
