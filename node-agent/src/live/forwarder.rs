//! The live output forwarder: gathers the lines of each job and writes them into the durable
//! outbox, one row per job (kind `output`: an [`schemas::OutputBatch`] without its `seq`, which
//! the uploader adds from the row's own, see [`batch_body`]).
//!
//! A job's lines go in [`INTERVAL`] after the first of them arrived, at once when they reach
//! [`ROW_LINES`] or [`ROW_BYTES`], and when its run ends ([`Op::End`], answered once they are
//! in). Its own small batching, apart from the log forwarder's 5 s.
//!
//! The outbox is bounded for live output: while the controller does not take it (an outage of
//! hours), output rows the uploader has not deleted are at most [`BACKLOG_BYTES`], those left
//! by earlier runs of the agent included (the bound starts from them, so restarts during an
//! outage do not add up); lines beyond are counted and reported by a marker line when the
//! backlog shrinks, or when the run ends.
//!
//! Lines of a job the controller stopped ([`super::StoppedJobs`]) are dropped, those pending
//! included, and counted; the count is logged at DEBUG when the run ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use schemas::OutputLine;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::StoppedJobs;
use crate::store::{OutboxKind, Store};

/// Lines wait at most this long in the forwarder.
pub(crate) const INTERVAL: Duration = Duration::from_millis(200);
/// A job's pending lines go into the outbox at once at this many lines…
pub(crate) const ROW_LINES: usize = 1000;
/// …or this many bytes (text plus [`super::LINE_OVERHEAD`] each).
pub(crate) const ROW_BYTES: usize = 256 << 10;
/// Most bytes of output rows written and not yet delivered.
pub(crate) const BACKLOG_BYTES: usize = 64 << 20;
/// While over [`BACKLOG_BYTES`], the outbox is asked what was delivered at most this often.
const BACKLOG_CHECK: Duration = Duration::from_secs(1);
/// Attempts to write a row into a failing outbox before its lines are given up.
const ATTEMPTS: u32 = 3;
const RETRY: Duration = Duration::from_millis(500);

/// What the readers (through [`super::RunOutput`]) tell the forwarder.
pub(crate) enum Op {
    /// Lines of one job; `cost` is their share of [`super::QUEUE_BYTES`].
    Lines {
        job: Arc<str>,
        lines: Vec<OutputLine>,
        cost: usize,
    },
    /// A run ended: its last lines (markers), then everything of the job into the outbox.
    /// `unsent`: lines the run did not hand over because the controller stopped the job.
    End {
        job: Arc<str>,
        lines: Vec<OutputLine>,
        unsent: usize,
        done: oneshot::Sender<()>,
    },
    /// Everything pending into the outbox.
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Pending {
    lines: Vec<OutputLine>,
    bytes: usize,
    /// Lines dropped because of the backlog, not reported yet.
    dropped: usize,
    /// Lines dropped because the controller stopped the job, logged when its run ends.
    unsent: usize,
}

impl Pending {
    /// Drops the lines of a stopped job, counting them.
    fn stop(&mut self) {
        self.unsent += self.lines.len() + std::mem::take(&mut self.dropped);
        self.lines.clear();
        self.bytes = 0;
    }
}

pub(crate) struct LiveForwarder {
    outbox: Store,
    rx: mpsc::Receiver<Op>,
    queued: Arc<AtomicUsize>,
    stopped: StoppedJobs,
    pending: HashMap<Arc<str>, Pending>,
    deadline: Option<Instant>,
    backlog: Backlog,
    /// [`BACKLOG_BYTES`] (smaller in tests).
    backlog_limit: usize,
}

impl LiveForwarder {
    pub(crate) fn new(
        outbox: Store,
        rx: mpsc::Receiver<Op>,
        queued: Arc<AtomicUsize>,
        stopped: StoppedJobs,
    ) -> Self {
        LiveForwarder {
            outbox,
            rx,
            queued,
            stopped,
            pending: HashMap::new(),
            deadline: None,
            backlog: Backlog::default(),
            backlog_limit: BACKLOG_BYTES,
        }
    }

    /// Runs until every [`super::LiveOutput`] is dropped, then writes what is left.
    pub(crate) async fn run(mut self) {
        self.count_earlier_rows().await;
        loop {
            let deadline = self.deadline;
            let wait = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                op = self.rx.recv() => match op {
                    None => break,
                    Some(op) => self.handle(op).await,
                },
                _ = wait => self.push_all().await,
            }
        }
        self.push_all().await;
    }

    async fn handle(&mut self, op: Op) {
        match op {
            Op::Lines { job, lines, cost } => {
                self.queued.fetch_sub(cost, Ordering::Relaxed);
                self.add(&job, lines).await;
                if self.deadline.is_none() && !self.pending.is_empty() {
                    self.deadline = Some(Instant::now() + INTERVAL);
                }
            }
            Op::End {
                job,
                lines,
                unsent,
                done,
            } => {
                self.add(&job, lines).await;
                let mut pending = self.pending.remove(&job).unwrap_or_default();
                if self.stopped.contains(&job) {
                    pending.stop();
                    tracing::debug!(id = %job, lines = unsent + pending.unsent,
                        "the controller takes no more output of this job: lines not forwarded");
                } else {
                    self.push(vec![(job, pending)], true).await;
                }
                let _ = done.send(());
            }
            Op::Flush(done) => {
                self.push_all().await;
                let _ = done.send(());
            }
        }
    }

    /// Adds lines to a job's pending row, writing it whenever it is full. The job is looked up
    /// once per message, not per line.
    async fn add(&mut self, job: &Arc<str>, lines: Vec<OutputLine>) {
        let mut pending = self.pending.remove(job).unwrap_or_default();
        if self.stopped.contains(job) {
            pending.lines.extend(lines);
            pending.stop();
            self.pending.insert(job.clone(), pending);
            return;
        }
        for line in lines {
            pending.bytes += line.line.len() + super::LINE_OVERHEAD;
            pending.lines.push(line);
            if pending.lines.len() >= ROW_LINES || pending.bytes >= ROW_BYTES {
                let full = std::mem::take(&mut pending);
                self.push(vec![(job.clone(), full)], false).await;
                // Over the backlog bound, push kept the job's count of dropped lines.
                pending = self.pending.remove(job).unwrap_or_default();
            }
        }
        if !pending.lines.is_empty() || pending.dropped > 0 || pending.unsent > 0 {
            self.pending.insert(job.clone(), pending);
        }
    }

    async fn push_all(&mut self) {
        self.deadline = None;
        let all: Vec<(Arc<str>, Pending)> = self.pending.drain().collect();
        self.push(all, false).await;
    }

    /// Writes one row per job in one transaction. Over the backlog bound the lines are only
    /// counted — except at a run's end (`end`), whose marker line about them always goes in.
    async fn push(&mut self, jobs: Vec<(Arc<str>, Pending)>, end: bool) {
        if jobs.is_empty() {
            return;
        }
        let full = self.backlog_full().await;
        let mut bodies = Vec::with_capacity(jobs.len());
        for (job, mut pending) in jobs {
            if self.stopped.contains(&job) {
                pending.stop();
                if !end {
                    // Kept for the count only, logged at the end of the run.
                    self.pending.insert(job, pending);
                }
                continue;
            }
            if full {
                pending.dropped += pending.lines.len();
                pending.lines.clear();
                if !end {
                    // Kept for the count only; the job's next lines report it.
                    self.pending.insert(
                        job,
                        Pending {
                            bytes: 0,
                            ..pending
                        },
                    );
                    continue;
                }
            }
            if pending.dropped > 0 {
                let text = format!(
                    "[jsagent] {} lines not forwarded: the controller has not taken the earlier output yet",
                    pending.dropped
                );
                let time = pending
                    .lines
                    .first()
                    .map_or_else(schemas::now_ms, |l| l.time);
                pending.lines.insert(0, super::marker(text, time));
            }
            if !pending.lines.is_empty() {
                bodies.push(batch_body(&job, &pending.lines));
            }
        }
        self.write(bodies).await;
    }

    async fn write(&mut self, bodies: Vec<String>) {
        if bodies.is_empty() {
            return;
        }
        let sizes: Vec<usize> = bodies.iter().map(String::len).collect();
        for attempt in 1..=ATTEMPTS {
            match self
                .outbox
                .outbox_push_numbered(OutboxKind::Output, bodies.clone())
                .await
            {
                Ok(seqs) => {
                    self.backlog.written(seqs.into_iter().zip(sizes));
                    return;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, "cannot queue live output; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => tracing::error!(error = %e, rows = bodies.len(),
                    "cannot queue live output; these lines are not forwarded"),
            }
        }
    }

    /// Starts the backlog from the output rows earlier runs of the agent left in the outbox.
    async fn count_earlier_rows(&mut self) {
        match self.outbox.outbox_sizes(OutboxKind::Output).await {
            Ok(rows) if !rows.is_empty() => {
                self.backlog.written(rows);
                tracing::info!(
                    rows = self.backlog.rows.len(),
                    bytes = self.backlog.bytes,
                    "live output of an earlier run is still to be delivered"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e,
                "cannot read the outbox; the live output backlog starts empty"),
        }
    }

    /// Whether the undelivered output rows reach [`BACKLOG_BYTES`] (asking the outbox what was
    /// delivered, at most every [`BACKLOG_CHECK`]).
    async fn backlog_full(&mut self) -> bool {
        if self.backlog.bytes < self.backlog_limit {
            return false;
        }
        let due = self
            .backlog
            .checked
            .is_none_or(|at| at.elapsed() >= BACKLOG_CHECK);
        if due {
            self.backlog.checked = Some(Instant::now());
            match self.outbox.outbox_oldest(OutboxKind::Output).await {
                Ok(oldest) => self.backlog.delivered_before(oldest),
                Err(e) => tracing::warn!(error = %e, "cannot read the outbox"),
            }
        }
        self.backlog.bytes >= self.backlog_limit
    }
}

/// The output rows this forwarder wrote, or found at its start, that may still be in the
/// outbox, oldest first.
#[derive(Default)]
struct Backlog {
    rows: VecDeque<(i64, usize)>,
    bytes: usize,
    checked: Option<Instant>,
}

impl Backlog {
    fn written(&mut self, rows: impl IntoIterator<Item = (i64, usize)>) {
        for (seq, bytes) in rows {
            self.bytes += bytes;
            self.rows.push_back((seq, bytes));
        }
    }

    /// Forgets the rows before `oldest`, the oldest output row still queued (`None`: none is).
    fn delivered_before(&mut self, oldest: Option<i64>) {
        while let Some(&(seq, bytes)) = self.rows.front() {
            if oldest.is_some_and(|oldest| seq >= oldest) {
                break;
            }
            self.bytes -= bytes;
            self.rows.pop_front();
        }
    }
}

/// The outbox row of a batch: an [`schemas::OutputBatch`] without `seq`. The uploader posts it
/// with the row's `seq`, which only grows (the outbox's AUTOINCREMENT never reuses one).
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    lines: &'a [OutputLine],
}

fn batch_body(job: &str, lines: &[OutputLine]) -> String {
    serde_json::to_string(&Row { id: job, lines }).expect("output lines serialize")
}

/// How the outbox row of every batch of `job` begins (`Row` serializes `id` first), to find
/// them in the outbox.
pub(crate) fn body_prefix(job: &str) -> String {
    let id = serde_json::to_string(job).expect("a string serializes");
    format!("{{\"id\":{id},")
}

/// The job of an outbox row, read from its beginning only (`None`: not a row of [`batch_body`]).
pub(crate) fn body_job(body: &str) -> Option<String> {
    let id = body.strip_prefix("{\"id\":")?;
    // The stream deserializer reads one value, the id, and leaves the lines alone.
    serde_json::Deserializer::from_str(id)
        .into_iter::<String>()
        .next()?
        .ok()
}

/// The posted [`schemas::OutputBatch`] of an outbox row: its body with `seq` set to the row's.
pub(crate) fn with_seq(seq: i64, body: &str) -> Option<String> {
    let rest = body.strip_prefix('{')?;
    Some(format!("{{\"seq\":{seq},{rest}"))
}

#[cfg(test)]
mod tests;
