//! The stats aggregator (DESIGN §7). [`Stats`] is the agent-wide handle, cheap to clone, fed by
//! level-10 messages of jobs ([`Stats::statsd`]), the process manager's samples
//! ([`Stats::gauges`]) and the UDP listener ([`crate::stats::udp`]). [`Stats::run`] flushes it
//! every `stats_flush_interval` into [`StatsBatch`]es in the durable outbox, which the uploader
//! posts to `POST /v1/agents/<gid>/<nid>/stats`.
//!
//! Shared state is one std [`Mutex`] around the [`Aggregates`]: feeding happens on output
//! readers, where a channel round trip would cost more than the work. Lines are parsed before the
//! lock is taken, and the lock is never held across an `.await`.

pub(crate) mod aggregate;
pub(crate) mod procstats;
pub mod statsd;
pub mod udp;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use schemas::{Metric, StatsBatch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::store::{OutboxKind, Store};
pub(crate) use aggregate::Aggregates;
use statsd::{Kind, Sample, Value};

/// Most metrics in one batch (one outbox row), so a request stays well under the body limit.
pub(crate) const MAX_BATCH_METRICS: usize = 500;

/// The agent-wide stats aggregator handle.
#[derive(Clone, Default)]
pub struct Stats {
    aggregates: Arc<Mutex<Aggregates>>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    fn lock(&self) -> MutexGuard<'_, Aggregates> {
        // A panic while holding the lock leaves plain numbers behind: still usable.
        self.aggregates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds a level-10 message's text (one metric per line) under `prefix` (a job's
    /// `"<domain>.<name>."`, or `""`). Returns how many lines were invalid (not statsd, or a
    /// metric sent with another type than it has); they are counted in `jsagent.statsd.invalid`.
    /// Never blocks on I/O: a short lock after parsing.
    pub fn statsd(&self, prefix: &str, block: &str) -> usize {
        let mut samples: Vec<Sample<'_>> = Vec::new();
        let mut invalid = 0;
        for parsed in statsd::parse_block(block) {
            match parsed {
                Ok(sample) => samples.push(sample),
                Err(_) => invalid += 1,
            }
        }
        let mut key = String::with_capacity(prefix.len() + 64);
        let mut aggregates = self.lock();
        aggregates.add_invalid(invalid as u64);
        for sample in &samples {
            key.clear();
            key.push_str(prefix);
            key.push_str(sample.name);
            // A type conflict is counted by the aggregates themselves.
            if !aggregates.add(&key, sample) {
                invalid += 1;
            }
        }
        invalid
    }

    /// Sets gauges `<prefix><name>` to the values: the process manager's summed samples of one
    /// domain/name, e.g. prefix `"ops.web.process."` with `cpu_percent`, `rss`, `vms`, `swap`,
    /// `threads`. A name that already is another type is skipped (and counted invalid).
    pub(crate) fn gauges(&self, prefix: &str, values: &[(&str, f64)]) {
        let mut key = String::with_capacity(prefix.len() + 16);
        let mut aggregates = self.lock();
        for (name, value) in values {
            key.clear();
            key.push_str(prefix);
            key.push_str(name);
            let sample = Sample {
                name,
                kind: Kind::Gauge,
                value: Value::Number(*value),
                rate: 1.0,
            };
            aggregates.add(&key, &sample);
        }
    }

    /// Ends the current interval (`interval` seconds long): its metrics, sorted by key.
    pub fn flush(&self, interval: f64) -> Vec<Metric> {
        self.lock().flush(interval)
    }

    /// Flushes every `every` into the outbox until `shutdown`, then once more.
    pub(crate) async fn run(
        self,
        store: Store,
        gid: u64,
        nid: u64,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last = Instant::now();
        let mut host = HostSampler::new();
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            let now = Instant::now();
            // Never 0 (a stop right after a flush): rates divide by it, the schema wants > 0.
            let interval = now.duration_since(last).as_secs_f64().max(1e-3);
            last = now;
            self.gauges(HOST_PREFIX, &host.sample());
            let metrics = self.flush(interval);
            let bodies = batches(gid, nid, schemas::now_ms(), interval, metrics);
            if let Err(e) = store.outbox_push(OutboxKind::Stats, bodies).await {
                tracing::warn!(error = %e, "cannot queue a stats batch; this interval is lost");
            }
            if stopping {
                break;
            }
        }
    }
}

/// Prefix of the host's own gauges: `cpu_percent` (all cores, since the last flush; not on
/// Windows), `mem_used` and `mem_total` (bytes).
pub(crate) const HOST_PREFIX: &str = "jsagent.host.";

/// The host's cpu and memory, sampled at each flush (one `sysinfo::System` kept between
/// samples: cpu % is the usage since the previous sample).
///
/// On Windows sysinfo reads the host's cpu usage through PDH queries, which Wine does not
/// implement (the process aborts there): only memory is sampled on Windows.
struct HostSampler {
    system: sysinfo::System,
}

impl HostSampler {
    fn new() -> HostSampler {
        #[allow(unused_mut, reason = "refreshed on unix only")]
        let mut system = sysinfo::System::new();
        #[cfg(not(windows))]
        system.refresh_cpu_usage();
        HostSampler { system }
    }

    /// `cpu_percent` (not on Windows), `mem_used`, `mem_total`.
    fn sample(&mut self) -> Vec<(&'static str, f64)> {
        let mut values = Vec::with_capacity(3);
        #[cfg(not(windows))]
        {
            self.system.refresh_cpu_usage();
            values.push(("cpu_percent", f64::from(self.system.global_cpu_usage())));
        }
        self.system.refresh_memory();
        values.push(("mem_used", self.system.used_memory() as f64));
        values.push(("mem_total", self.system.total_memory() as f64));
        values
    }
}

/// The metrics of one flush as outbox rows: batches of at most [`MAX_BATCH_METRICS`] metrics.
pub(crate) fn batches(
    gid: u64,
    nid: u64,
    epoch: u64,
    interval: f64,
    metrics: Vec<Metric>,
) -> Vec<String> {
    metrics
        .chunks(MAX_BATCH_METRICS)
        .filter_map(|chunk| {
            let batch = StatsBatch {
                gid,
                nid,
                epoch,
                interval,
                metrics: chunk.to_vec(),
            };
            serde_json::to_string(&batch).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests;
