//! One flush interval's aggregates (DESIGN §7), keyed by the full metric name. Pure: samples in,
//! [`Metric`]s out; the owner decides when to flush and holds the lock.
//!
//! Per interval: counters → `sum` (each sample divided by its rate) and `rate` (sum per second);
//! gauges → `value` (the last one, deltas applied); timers and histograms → `count` (samples
//! divided by their rate), and over the samples received `sum`, `min`, `max`, `mean`, `p50`,
//! `p90`, `p99` (nearest rank); sets → `count` of unique members.
//!
//! A metric without samples in an interval is not in its flush. A gauge keeps its value across
//! flushes (deltas apply to it) until it has been idle for [`GAUGE_KEEP_FLUSHES`] flushes.
//! Bounds, so a runaway job cannot exhaust memory: at most [`MAX_KEYS`] metrics (samples of new
//! ones beyond are counted in `jsagent.statsd.dropped`) and [`MAX_SAMPLES`] samples kept per
//! timer and interval (beyond, a uniform reservoir; count, sum, min, max stay exact). Invalid
//! lines and a metric sent with another type than it has are counted in `jsagent.statsd.invalid`.

use std::collections::{HashMap, HashSet};

use rand::Rng;
use schemas::Metric;
use serde_json::{json, Map, Value as Json};

use crate::stats::statsd::{Kind, Sample, Value};

pub(crate) const MAX_KEYS: usize = 100_000;
pub(crate) const MAX_SAMPLES: usize = 100_000;
pub(crate) const GAUGE_KEEP_FLUSHES: u32 = 360;
/// Keys of the aggregator's own counters.
pub(crate) const INVALID_KEY: &str = "jsagent.statsd.invalid";
pub(crate) const DROPPED_KEY: &str = "jsagent.statsd.dropped";

#[derive(Debug)]
enum Entry {
    Counter {
        sum: f64,
    },
    Gauge {
        value: f64,
        updated: bool,
        idle: u32,
    },
    Timer {
        kind: Kind,
        kept: Vec<f64>,
        seen: u64,
        count: f64,
        sum: f64,
        min: f64,
        max: f64,
    },
    Set(HashSet<String>),
}

impl Entry {
    fn new(kind: Kind) -> Entry {
        match kind {
            Kind::Counter => Entry::Counter { sum: 0.0 },
            Kind::Gauge => Entry::Gauge {
                value: 0.0,
                updated: false,
                idle: 0,
            },
            Kind::Timer | Kind::Histogram => Entry::Timer {
                kind,
                kept: Vec::new(),
                seen: 0,
                count: 0.0,
                sum: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
            },
            Kind::Set => Entry::Set(HashSet::new()),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Entry::Counter { .. } => Kind::Counter,
            Entry::Gauge { .. } => Kind::Gauge,
            Entry::Timer { kind, .. } => *kind,
            Entry::Set(_) => Kind::Set,
        }
    }

    /// Adds a sample of this entry's kind.
    fn add(&mut self, value: Value<'_>, rate: f64) {
        match (self, value) {
            (Entry::Counter { sum }, Value::Number(v)) => *sum += v / rate,
            (Entry::Gauge { value, updated, .. }, v) => {
                match v {
                    Value::Number(n) => *value = n,
                    Value::Delta(d) => *value += d,
                    Value::Member(_) => return,
                }
                *updated = true;
            }
            (
                Entry::Timer {
                    kept,
                    seen,
                    count,
                    sum,
                    min,
                    max,
                    ..
                },
                Value::Number(v),
            ) => {
                *seen += 1;
                *count += 1.0 / rate;
                *sum += v;
                *min = min.min(v);
                *max = max.max(v);
                if kept.len() < MAX_SAMPLES {
                    kept.push(v);
                } else {
                    // Reservoir sampling (algorithm R): each sample is kept with equal chance.
                    let slot = rand::rng().random_range(0..*seen) as usize;
                    if let Some(s) = kept.get_mut(slot) {
                        *s = v;
                    }
                }
            }
            (Entry::Set(members), Value::Member(m)) if !members.contains(m) => {
                members.insert(m.to_owned());
            }
            _ => {}
        }
    }
}

/// The aggregates of one interval, plus the gauges kept across intervals.
#[derive(Debug, Default)]
pub(crate) struct Aggregates {
    metrics: HashMap<String, Entry>,
    invalid: u64,
    dropped: u64,
}

impl Aggregates {
    /// Adds one sample under `key` (the prefixed name). A sample whose type differs from the
    /// type the key already has is refused: `false`, and counted invalid.
    pub(crate) fn add(&mut self, key: &str, sample: &Sample<'_>) -> bool {
        if let Some(entry) = self.metrics.get_mut(key) {
            if entry.kind() != sample.kind {
                self.invalid += 1;
                return false;
            }
            entry.add(sample.value, sample.rate);
            return true;
        }
        if self.metrics.len() >= MAX_KEYS {
            self.dropped += 1;
            return true;
        }
        let mut entry = Entry::new(sample.kind);
        entry.add(sample.value, sample.rate);
        self.metrics.insert(key.to_owned(), entry);
        true
    }

    /// Counts lines that did not parse.
    pub(crate) fn add_invalid(&mut self, lines: u64) {
        self.invalid += lines;
    }

    /// Ends an interval of `interval` seconds: the metrics that had samples, sorted by key.
    pub(crate) fn flush(&mut self, interval: f64) -> Vec<Metric> {
        let interval = if interval > 0.0 { interval } else { 1.0 };
        let mut out = Vec::new();
        self.metrics.retain(|key, entry| {
            let (values, keep) = flush_entry(entry, interval);
            if let Some(values) = values {
                out.push(metric(key, entry.kind(), values));
            }
            keep
        });
        for (key, n) in [(INVALID_KEY, self.invalid), (DROPPED_KEY, self.dropped)] {
            if n > 0 {
                out.push(metric(key, Kind::Counter, counter(n as f64, interval)));
            }
        }
        self.invalid = 0;
        self.dropped = 0;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

fn metric(key: &str, kind: Kind, values: Map<String, Json>) -> Metric {
    Metric {
        key: key.to_owned(),
        kind: kind.as_str().to_owned(),
        values,
    }
}

fn object(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

fn counter(sum: f64, interval: f64) -> Map<String, Json> {
    object(json!({"sum": sum, "rate": sum / interval}))
}

/// The values of an entry at the end of an interval (`None`: no samples), and whether the
/// entry stays for the next interval.
fn flush_entry(entry: &mut Entry, interval: f64) -> (Option<Map<String, Json>>, bool) {
    match entry {
        Entry::Counter { sum } => (Some(counter(*sum, interval)), false),
        Entry::Gauge {
            value,
            updated,
            idle,
        } => {
            if std::mem::take(updated) {
                *idle = 0;
                (Some(object(json!({"value": *value}))), true)
            } else {
                *idle += 1;
                (None, *idle <= GAUGE_KEEP_FLUSHES)
            }
        }
        Entry::Timer {
            kept,
            seen,
            count,
            sum,
            min,
            max,
            ..
        } => {
            kept.sort_unstable_by(f64::total_cmp);
            let values = json!({
                "count": *count, "sum": *sum, "min": *min, "max": *max,
                "mean": *sum / *seen as f64,
                "p50": percentile(kept, 50), "p90": percentile(kept, 90),
                "p99": percentile(kept, 99),
            });
            (Some(object(values)), false)
        }
        Entry::Set(members) => (Some(object(json!({"count": members.len()}))), false),
    }
}

/// Nearest-rank percentile of sorted, non-empty `values`: the smallest value with at least
/// `p` percent of the values at or below it.
pub(crate) fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // In integers: a float `p / 100 * n` can land a hair above a whole rank.
    let rank = (p * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}
