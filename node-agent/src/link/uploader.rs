//! The uploader (DESIGN §5.3, §6): posts the outbox to the controller — results first, then
//! live output, stats and logs taking turns, a batch each, so none waits behind a flood of
//! another — oldest first, up to [`BATCH`] items and about [`BATCH_BYTES`] per request,
//! and deletes them only once the controller answered 2xx (every item of a 2xx array answer is
//! settled; refused ones are logged). Failures follow the agent retry rules of docs/protocol.md: back off and retry; a 413
//! splits the batch in halves. A single result still refused with 413 (the controller's
//! `--max-body` is below the agent's result limit) is replaced, in the outbox too, by an `ERROR`
//! result of the same job and run that says why, so the job still ends; only a log, stats or
//! output item, or a replacement refused again, is dropped, with an ERROR log.
//!
//! Live output queued before a result is posted before it (a run's lines go into the outbox
//! before its result, see [`crate::live`]), so `output:<id>` holds them when the result shows.
//! Output batches are posted with their row's `seq`; what the controller refuses is dropped,
//! logged at WARN for the first batch of a job and at DEBUG after. The jobs the controller
//! names in its answer's `stop` are stopped ([`StoppedJobs`]) and their output rows deleted.
//!
//! Woken when results are queued (not by the run results of config-file jobs, which wait for
//! the next upload: [`Store::run_result`]), and every [`TICK`] regardless. When stopped it makes one last
//! attempt to empty the outbox, bounded by [`FINAL_FLUSH`]; what is left is sent after the
//! next start.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use schemas::JobResult;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::link::backoff::Backoff;
use crate::link::client::{Controller, ControllerError};
use crate::live::forwarder::{body_job, body_prefix, with_seq};
use crate::live::stopped::RecentIds;
use crate::live::StoppedJobs;
use crate::store::result_limit::RESULT_LIMIT;
use crate::store::{OutboxKind, OutboxRow, Store, StoreError};

/// Most items per request.
pub(crate) const BATCH: usize = 100;
/// A request holds items up to about this many bytes (one larger item goes alone), under the
/// controller's default limits (`--max-body` 16 MiB, `--max-stats-body` 4 MiB), so 413s are rare.
pub(crate) const BATCH_BYTES: usize = 4 << 20;
/// Arguments echoed in a replacement error up to this size (else `{}`).
const REPLACEMENT_ARGS: usize = 4096;
/// Look at the outbox at least this often.
const TICK: Duration = Duration::from_secs(10);
/// Longest final flush when the agent stops.
pub(crate) const FINAL_FLUSH: Duration = Duration::from_secs(5);
/// The kinds that take turns after results.
const TURNS: [OutboxKind; 3] = [OutboxKind::Output, OutboxKind::Stats, OutboxKind::Logs];

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

pub(crate) struct Uploader {
    store: Store,
    controller: Controller,
    token_source: String,
    /// Filled from the controller's answers to output (see [`crate::live`]).
    stopped: StoppedJobs,
    /// The index in [`TURNS`] of the kind whose turn is next.
    turn: AtomicUsize,
    /// Jobs whose refused output was logged at WARN (a std mutex, never held across an await).
    warned: Mutex<RecentIds>,
}

impl Uploader {
    pub(crate) fn new(
        store: Store,
        controller: Controller,
        token_source: String,
        stopped: StoppedJobs,
    ) -> Uploader {
        Uploader {
            store,
            controller,
            token_source,
            stopped,
            turn: AtomicUsize::new(0),
            warned: Mutex::new(RecentIds::default()),
        }
    }

    /// Uploads until `stop`, then flushes once more (at most [`FINAL_FLUSH`]).
    pub(crate) async fn run(self, stop: CancellationToken) {
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

    /// Sends batches until the outbox is empty. What a batch settled is deleted in the store
    /// call that picks the next batch ([`Store::outbox_next`]): one store call a batch.
    async fn upload_pending(&self) -> Result<(), UploadError> {
        let mut settled = Vec::new();
        while self.upload_step(&mut settled).await?.is_some() {}
        Ok(())
    }

    /// Deletes the rows in `settled`, sends the next batch and answers its kind (`None`: the
    /// outbox is empty); `settled` then holds the rows that batch settled. Results come first;
    /// else the kind whose turn it is among [`TURNS`], or the next one that has rows: a flood of
    /// one kind cannot hold the others back. The turn moves on before the post, so a kind the
    /// controller keeps failing does not block the others either.
    async fn upload_step(&self, settled: &mut Vec<i64>) -> Result<Option<OutboxKind>, UploadError> {
        let first = self.turn.load(Ordering::Relaxed);
        let turns = (0..TURNS.len())
            .map(|i| TURNS[(first + i) % TURNS.len()])
            .collect();
        let next = self
            .store
            .outbox_next(std::mem::take(settled), turns, BATCH)
            .await?;
        let Some(next) = next else {
            return Ok(None);
        };
        if next.turn {
            let at = TURNS.iter().position(|k| *k == next.kind).unwrap_or(0);
            self.turn.store((at + 1) % TURNS.len(), Ordering::Relaxed);
        }
        if let Err(e) = self.send(next.kind, next.rows, settled).await {
            if !settled.is_empty() {
                self.store.outbox_delete(std::mem::take(settled)).await?;
            }
            return Err(e);
        }
        Ok(Some(next.kind))
    }

    /// One [`Uploader::upload_step`], its rows deleted at once (tests).
    #[cfg(test)]
    async fn upload_next(&self) -> Result<Option<OutboxKind>, UploadError> {
        let mut settled = Vec::new();
        let kind = self.upload_step(&mut settled).await?;
        self.store.outbox_delete(settled).await?;
        Ok(kind)
    }

    /// Posts rows, splitting on 413, and adds what the controller settled to `settled` (the
    /// caller deletes them).
    async fn send(
        &self,
        kind: OutboxKind,
        rows: Vec<OutboxRow>,
        settled: &mut Vec<i64>,
    ) -> Result<(), UploadError> {
        let mut batches = by_bytes(rows, BATCH_BYTES);
        // Results replaced by an error in this call: one refused again is dropped.
        let mut replaced = HashSet::new();
        while let Some(mut batch) = batches.pop() {
            match self.post(kind, &batch).await {
                Ok(()) => {}
                Err(ControllerError::TooLarge(_)) if batch.len() > 1 => {
                    let second = batch.split_off(batch.len() / 2);
                    batches.push(second);
                    batches.push(batch);
                    continue;
                }
                Err(ControllerError::TooLarge(why))
                    if kind == OutboxKind::Result && !replaced.contains(&batch[0].seq) =>
                {
                    if let Some(row) = self.replace(&batch[0], &why).await? {
                        replaced.insert(row.seq);
                        batches.push(vec![row]);
                        continue;
                    }
                }
                Err(ControllerError::TooLarge(why)) => {
                    tracing::error!(kind = kind.as_str(), bytes = batch[0].body.len(), %why,
                        "an item is too large for the controller; it is dropped");
                }
                // Logs, stats and output the controller refuses (a bad item, an older controller
                // without the path) would block the outbox for ever; results are refused item by
                // item.
                Err(ControllerError::Rejected { status, body }) if kind != OutboxKind::Result => {
                    tracing::warn!(kind = kind.as_str(), %status, %body, items = batch.len(),
                        "the controller rejected a batch; it is dropped");
                }
                Err(e) => return Err(e.into()),
            }
            settled.extend(batch.iter().map(|r| r.seq));
        }
        Ok(())
    }

    /// Posts one batch; a 2xx answer settles every item of it.
    async fn post(&self, kind: OutboxKind, batch: &[OutboxRow]) -> Result<(), ControllerError> {
        let bodies: Vec<&str> = batch.iter().map(|r| r.body.as_str()).collect();
        match kind {
            OutboxKind::Result => {
                let outcome = self.controller.post_results(&bodies).await?;
                for rejected in &outcome.rejected {
                    tracing::warn!(id = %rejected.id, error = %rejected.error, message = %rejected.message,
                        "the controller rejected a result; it is dropped");
                }
                Ok(())
            }
            OutboxKind::Output => self.post_output(batch).await,
            OutboxKind::Logs | OutboxKind::Stats => self.controller.post_items(kind, &bodies).await,
        }
    }

    /// Posts output rows as [`schemas::OutputBatch`]es, each with its row's `seq`; rows of
    /// stopped jobs are not posted (settled all the same: the controller would refuse them).
    async fn post_output(&self, batch: &[OutboxRow]) -> Result<(), ControllerError> {
        let bodies: Vec<String> = batch
            .iter()
            .filter(|r| !body_job(&r.body).is_some_and(|job| self.stopped.contains(&job)))
            .filter_map(|r| {
                let body = with_seq(r.seq, &r.body);
                if body.is_none() {
                    tracing::error!(seq = r.seq, "an unreadable output row is dropped");
                }
                body
            })
            .collect();
        if bodies.is_empty() {
            return Ok(());
        }
        let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let answer = self.controller.post_output(&bodies).await?;
        self.log_rejected(&answer.rejected);
        if answer.capped > 0 {
            tracing::debug!(
                lines = answer.capped,
                "live output over the controller's cap"
            );
        }
        self.stop(&answer.stop).await;
        Ok(())
    }

    /// Refused output batches: the first of a job at WARN, the next ones at DEBUG (a job's
    /// batches come every 200 ms).
    fn log_rejected(&self, rejected: &[schemas::Rejected]) {
        for r in rejected {
            let first = self
                .warned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(&r.id);
            if first {
                tracing::warn!(id = %r.id, error = %r.error, message = %r.message,
                    "the controller rejected live output; it is dropped (its next batches are logged at DEBUG)");
            } else {
                tracing::debug!(id = %r.id, error = %r.error, message = %r.message,
                    "the controller rejected live output; it is dropped");
            }
        }
    }

    /// Stops forwarding the output of the jobs the controller takes no more, and deletes their
    /// queued output rows (those already read for posting are refused by the controller).
    async fn stop(&self, jobs: &[String]) {
        if jobs.is_empty() {
            return;
        }
        for job in self.stopped.stop(jobs) {
            tracing::info!(id = %job,
                "the controller takes no more live output of this job; it is not forwarded until the agent restarts");
        }
        let prefixes = jobs.iter().map(|job| body_prefix(job)).collect();
        match self
            .store
            .outbox_delete_prefixed(OutboxKind::Output, prefixes)
            .await
        {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "output rows of stopped jobs deleted"),
            Err(e) => tracing::warn!(error = %e,
                "cannot delete the output rows of stopped jobs; the controller will refuse them"),
        }
    }

    /// Replaces, in the outbox too, a result the controller refused as too large by an `ERROR`
    /// result of the same job and run saying why. `None` if the row is not a result (then it is
    /// dropped).
    async fn replace(&self, row: &OutboxRow, why: &str) -> Result<Option<OutboxRow>, UploadError> {
        let Some(error) = refused_result(&row.body, why) else {
            tracing::error!(bytes = row.body.len(), %why,
                "the controller refused an unreadable result as too large; it is dropped");
            return Ok(None);
        };
        tracing::error!(id = %error.id, bytes = row.body.len(), %why,
            "the controller refused a result as too large; it is replaced by an ERROR result (raise its --max-body)");
        let body = serde_json::to_string(&error).map_err(crate::store::StoreError::from)?;
        self.store.outbox_replace(row.seq, body.clone()).await?;
        Ok(Some(OutboxRow { seq: row.seq, body }))
    }

    fn report(&self, e: &UploadError) {
        match e {
            UploadError::Controller(e) => e.log("post the outbox", &self.token_source),
            UploadError::Store(e) => tracing::error!(error = %e, "cannot read the outbox"),
        }
    }
}

/// Splits rows, in order, into batches of about `max_bytes` (a larger row goes alone), the first
/// batch last: ready to be popped.
fn by_bytes(rows: Vec<OutboxRow>, max_bytes: usize) -> Vec<Vec<OutboxRow>> {
    let mut batches: Vec<Vec<OutboxRow>> = Vec::new();
    let mut bytes = 0;
    for row in rows {
        match batches.last_mut() {
            Some(batch) if bytes + row.body.len() <= max_bytes => {
                bytes += row.body.len() + 1;
                batch.push(row);
            }
            _ => {
                bytes = row.body.len() + 1;
                batches.push(vec![row]);
            }
        }
    }
    batches.reverse();
    batches
}

/// The `ERROR` result that stands for a result (JSON `body`) the controller refused as too
/// large: same job, agent, run and finality, with the reason as its `data`.
pub(crate) fn refused_result(body: &str, why: &str) -> Option<JobResult> {
    let refused: JobResult = serde_json::from_str(body).ok()?;
    let args = match serde_json::to_string(&refused.args) {
        Ok(text) if text.len() <= REPLACEMENT_ARGS => refused.args,
        _ => Value::Object(Default::default()),
    };
    let reason = format!(
        "result of {} bytes refused by the controller (413 too large: {why}); replaced by this \
         error, its output and data are lost: the controller's --max-body should be at least \
         {RESULT_LIMIT} bytes, the agent's result limit",
        body.len()
    );
    let mut error = JobResult::error(
        &refused.id,
        refused.gid,
        refused.nid,
        &refused.cmd,
        args,
        reason,
    );
    error.run = refused.run;
    error.is_final = refused.is_final;
    error.starttime = refused.starttime;
    error.time = refused.time;
    error.exit_code = refused.exit_code;
    Some(error)
}

#[cfg(test)]
mod tests;
