//! Live output (DESIGN §11, issue 12): every line a job prints, forwarded to the controller
//! within about [`forwarder::INTERVAL`], which appends it to the Redis stream `output:<id>`.
//!
//! - [`LiveOutput`] is the agent-wide handle: the queue into the [`forwarder`] task and the cap
//!   per run (`output_max_lines`). Config `output = false` means there is none.
//! - [`RunOutput`] is the hook of one run of a job, shared by the readers of its stdout and
//!   stderr ([`crate::supervisor::output`]). [`RunOutput::offer`] never waits: a reader hands
//!   its lines over with `try_send`, within a byte budget ([`QUEUE_BYTES`]); what cannot be
//!   handed over is counted and reported as one marker line (level [`MARKER_LEVEL`]) once there
//!   is room again. After `output_max_lines` lines a run gets one marker line and nothing more.
//! - [`RunOutput::end`], once the readers are done, puts the run's last lines into the outbox
//!   before the supervisor queues the run's result, so a client that sees the result can read
//!   every forwarded line.
//! - [`StoppedJobs`] ([`stopped`]): the jobs whose output the controller takes no more. A run
//!   of one hands over nothing more (no marker: the controller added one) and only counts its
//!   lines, reported at DEBUG when it ends; the forwarder drops what it still holds of the job
//!   and the uploader deletes the job's output rows from the outbox.
//!
//! Memory: the queue holds at most [`QUEUE`] messages and about [`QUEUE_BYTES`] of lines; the
//! forwarder holds at most one outbox row per job with pending lines.

pub(crate) mod forwarder;
pub(crate) mod stopped;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use schemas::output::MARKER_LEVEL;
use schemas::OutputLine;
use tokio::sync::{mpsc, oneshot};

use crate::logs::logline::Line;
use crate::store::Store;
use forwarder::{LiveForwarder, Op};
pub(crate) use stopped::StoppedJobs;

/// Messages (each the lines of one read) queued to the forwarder.
pub(crate) const QUEUE: usize = 1024;
/// Bytes of lines queued to the forwarder (text plus [`LINE_OVERHEAD`] each) before readers
/// count their lines as not forwarded instead.
pub(crate) const QUEUE_BYTES: usize = 4 << 20;
/// What a line costs in memory besides its text.
pub(crate) const LINE_OVERHEAD: usize = std::mem::size_of::<OutputLine>();

/// The agent-wide handle of live output (cheap to clone).
#[derive(Clone)]
pub(crate) struct LiveOutput {
    tx: mpsc::Sender<Op>,
    /// Bytes of the lines in the queue (see [`QUEUE_BYTES`]).
    queued: Arc<AtomicUsize>,
    max_lines: usize,
    stopped: StoppedJobs,
}

impl LiveOutput {
    /// Starts the forwarder into `outbox`; it ends after the last handle is dropped.
    pub(crate) fn start(outbox: Store, max_lines: usize) -> LiveOutput {
        let (tx, rx) = mpsc::channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let stopped = StoppedJobs::default();
        tokio::spawn(LiveForwarder::new(outbox, rx, queued.clone(), stopped.clone()).run());
        LiveOutput {
            tx,
            queued,
            max_lines,
            stopped,
        }
    }

    /// The jobs whose output the controller takes no more, for the uploader to fill.
    pub(crate) fn stopped(&self) -> &StoppedJobs {
        &self.stopped
    }

    /// A handle whose queue the test reads itself, instead of a forwarder.
    #[cfg(test)]
    pub(crate) fn detached(max_lines: usize) -> (LiveOutput, mpsc::Receiver<Op>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let live = LiveOutput {
            tx,
            queued,
            max_lines,
            stopped: StoppedJobs::default(),
        };
        (live, rx)
    }

    /// The hook of a new run of job `jobid`.
    pub(crate) fn run(&self, jobid: &str) -> RunOutput {
        RunOutput {
            inner: Arc::new(Run {
                live: self.clone(),
                job: jobid.into(),
                state: Mutex::new(RunState::default()),
            }),
        }
    }

    /// Resolves once every line handed over before is in the outbox.
    pub(crate) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Op::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Bytes of lines waiting in the queue (for tests of the memory bound).
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The live output of one run of a job (cheap to clone: the stdout and stderr readers share it).
#[derive(Clone)]
pub(crate) struct RunOutput {
    inner: Arc<Run>,
}

struct Run {
    live: LiveOutput,
    job: Arc<str>,
    /// A std mutex: held to count a read's lines, never across an await.
    state: Mutex<RunState>,
}

#[derive(Debug, Default)]
struct RunState {
    /// Lines of the run seen so far, up to the cap (forwarded or not).
    offered: usize,
    /// Lines not handed over and not reported yet.
    dropped: usize,
    /// The cap was reached; `cap_owed` until its marker was handed over.
    capped: bool,
    cap_owed: bool,
    /// The controller takes no more output of the job ([`StoppedJobs`]); `unsent` lines were
    /// not handed over since.
    stopped: bool,
    unsent: usize,
}

impl RunState {
    /// Nothing more to hand over, ever.
    fn settled(&self) -> bool {
        self.stopped || (self.capped && !self.cap_owed && self.dropped == 0)
    }
}

impl RunOutput {
    /// Whether lines are still wanted: `false` once the run reached its cap and said so.
    pub(crate) fn wants_lines(&self) -> bool {
        !self.lock().settled()
    }

    /// Hands the lines of one read (fd 1 or 2) to the forwarder, never waiting: lines that do
    /// not fit count as not forwarded, reported by a marker line with the next ones that do.
    pub(crate) fn offer(&self, fd: u8, lines: Vec<Line>) {
        let time = schemas::now_ms();
        let mut state = self.lock();
        if !state.stopped && self.inner.live.stopped.contains(&self.inner.job) {
            state.stopped = true;
        }
        if state.stopped {
            state.unsent += lines.len();
            return;
        }
        if state.settled() {
            return;
        }
        let room = self.inner.live.max_lines - state.offered;
        let take = lines.len().min(room);
        if lines.len() > room && !state.capped {
            state.capped = true;
            state.cap_owed = true;
        }
        state.offered += take;
        let mut out = Vec::with_capacity(take + 2);
        self.markers_before(&state, &mut out, time);
        out.extend(lines.into_iter().take(take).map(|l| OutputLine {
            fd,
            level: l.level,
            line: l.text,
            time,
        }));
        self.markers_after(&state, &mut out, time);
        if out.is_empty() {
            return;
        }
        match self.hand_over(out) {
            Ok(()) => {
                state.dropped = 0;
                state.cap_owed = false;
            }
            Err(()) => state.dropped += take,
        }
    }

    /// Counts lines the reader's parser did not keep (see [`RunOutput::wants_lines`]): lines
    /// not forwarded, if the controller stopped the job (after the run's cap they are not
    /// counted).
    pub(crate) fn skipped(&self, lines: usize) {
        let mut state = self.lock();
        if state.stopped {
            state.unsent += lines;
        }
    }

    /// Once the run's readers are done: hands over its owed marker lines and waits until every
    /// line of the run is in the outbox (before the run's result goes in).
    pub(crate) async fn end(&self) {
        let time = schemas::now_ms();
        let mut lines = Vec::new();
        let unsent;
        {
            let mut state = self.lock();
            if !state.stopped {
                self.markers_before(&state, &mut lines, time);
                self.markers_after(&state, &mut lines, time);
            }
            state.dropped = 0;
            state.cap_owed = false;
            unsent = std::mem::take(&mut state.unsent);
        }
        let (done, stored) = oneshot::channel();
        let op = Op::End {
            job: self.inner.job.clone(),
            lines,
            unsent,
            done,
        };
        if self.inner.live.tx.send(op).await.is_ok() {
            let _ = stored.await;
        }
    }

    fn markers_before(&self, state: &RunState, out: &mut Vec<OutputLine>, time: u64) {
        if state.dropped > 0 {
            let text = format!(
                "[jsagent] {} lines not forwarded: the agent was busy",
                state.dropped
            );
            out.push(marker(text, time));
        }
    }

    fn markers_after(&self, state: &RunState, out: &mut Vec<OutputLine>, time: u64) {
        if state.cap_owed {
            let text = format!(
                "[jsagent] live output stopped after {} lines; the result keeps the last lines",
                self.inner.live.max_lines
            );
            out.push(marker(text, time));
        }
    }

    /// Queues lines if the byte budget and the queue have room.
    fn hand_over(&self, lines: Vec<OutputLine>) -> Result<(), ()> {
        let live = &self.inner.live;
        let cost: usize = lines.iter().map(|l| l.line.len() + LINE_OVERHEAD).sum();
        // Two readers may both pass this check at once: the budget is exceeded by at most one
        // read's lines, which is still a bound.
        if live.queued.load(Ordering::Relaxed) + cost > QUEUE_BYTES {
            return Err(());
        }
        live.queued.fetch_add(cost, Ordering::Relaxed);
        let op = Op::Lines {
            job: self.inner.job.clone(),
            lines,
            cost,
        };
        live.tx.try_send(op).map_err(|_| {
            live.queued.fetch_sub(cost, Ordering::Relaxed);
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A line jsagent adds to a job's output: level [`MARKER_LEVEL`], on stderr.
pub(crate) fn marker(text: String, time: u64) -> OutputLine {
    OutputLine {
        fd: 2,
        level: MARKER_LEVEL,
        line: text,
        time,
    }
}

#[cfg(test)]
mod tests;
