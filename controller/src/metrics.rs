//! Counters and histograms of this instance, rendered as Prometheus text on `GET /metrics`
//! together with gauges read from Redis at scrape time; and [`render_agent_stats`], the agents'
//! latest aggregated stats for `GET /metrics/agents`.
//!
//! What a scrape reads of every agent (its stats, its queue depths) costs Redis calls in
//! proportion to the agents, so it is kept [`SCRAPE_CACHE`] in a [`Cached`] value that one
//! request at a time computes: a burst of scrapes, from several Prometheus servers or a
//! dashboard, costs one computation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const STATES: [&str; 4] = ["OK", "ERROR", "TIMEOUT", "KILLED"];
/// Request kinds with their own latency histogram.
pub const ROUTES: [&str; 8] = [
    "hello", "cmd", "result", "logs", "stats", "output", "other", "operator",
];
/// Where a request of a kind not in [`ROUTES`] is counted.
const OTHER: &str = "other";

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    routed: AtomicU64,
    dead: AtomicU64,
    finished: [AtomicU64; STATES.len()],
    stats_batches: AtomicU64,
    stats_dropped: AtomicU64,
    not_replicated: AtomicU64,
    rollouts_stopped: AtomicU64,
    latency: [Histogram; ROUTES.len()],
    /// What scrapes read of every agent.
    pub cache: ScrapeCache,
}

/// How long what a scrape reads of every agent is reused.
pub const SCRAPE_CACHE: Duration = Duration::from_secs(2);

/// The per-agent parts of the scrapes, each reused for [`SCRAPE_CACHE`].
#[derive(Default)]
pub struct ScrapeCache {
    /// The text of `GET /metrics/agents`.
    pub agent_stats: Cached<String>,
    /// Commands waiting in, and delivered from, all agents' queues (for `/metrics`).
    pub queue_depths: Cached<(u64, u64)>,
}

/// A value computed at most once per `ttl` and by one caller at a time (single flight):
/// callers that come while it is computed wait for that computation and share its value.
/// A failed computation is not kept; the next caller tries again.
pub struct Cached<T> {
    // A tokio mutex: held across the computation's `.await`s, which is the point.
    slot: Mutex<Option<(Instant, T)>>,
    ttl: Duration,
}

impl<T> Default for Cached<T> {
    fn default() -> Cached<T> {
        Cached::new(SCRAPE_CACHE)
    }
}

impl<T> Cached<T> {
    pub fn new(ttl: Duration) -> Cached<T> {
        Cached {
            slot: Mutex::new(None),
            ttl,
        }
    }
}

impl<T: Clone> Cached<T> {
    /// The value, computed by `compute` unless one younger than the ttl is kept.
    pub async fn get_or_try<E, F, Fut>(&self, compute: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, value)) = slot.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(value.clone());
            }
        }
        let value = compute().await?;
        *slot = Some((Instant::now(), value.clone()));
        Ok(value)
    }
}

impl Metrics {
    pub fn routed(&self, targets: usize) {
        self.routed.fetch_add(targets as u64, Relaxed);
    }

    pub fn dead_lettered(&self) {
        self.dead.fetch_add(1, Relaxed);
    }

    pub fn finished(&self, state: &str) {
        if let Some(i) = STATES.iter().position(|s| *s == state) {
            self.finished[i].fetch_add(1, Relaxed);
        }
    }

    /// Stats batches appended to agents' streams.
    pub fn stats_recorded(&self, batches: usize) {
        self.stats_batches.fetch_add(batches as u64, Relaxed);
    }

    /// Metric names not stored in an agent's `:latest` (it held `--stats-max-metrics`).
    pub fn stats_metrics_dropped(&self, names: usize) {
        self.stats_dropped.fetch_add(names as u64, Relaxed);
    }

    /// A rollout stopped by `max_failures` (counted by the instance that ended its agents).
    pub fn rollout_stopped(&self) {
        self.rollouts_stopped.fetch_add(1, Relaxed);
    }

    /// A write that fewer replicas than `--redis-wait-replicas` confirmed in time.
    pub fn not_replicated(&self) {
        self.not_replicated.fetch_add(1, Relaxed);
    }

    pub fn observe(&self, route: &str, took: Duration) {
        let position = |route: &str| ROUTES.iter().position(|r| *r == route);
        let Some(i) = position(route).or_else(|| position(OTHER)) else {
            return;
        };
        let h = &self.latency[i];
        let secs = took.as_secs_f64();
        for (b, bound) in h.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                b.fetch_add(1, Relaxed);
            }
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Prometheus text exposition; `gauges` are (name, help, value) read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut out,
            "jsacc_jobs_routed_total",
            "Commands pushed onto agent queues (one per target).",
        );
        let _ = writeln!(out, "jsacc_jobs_routed_total {}", self.routed.load(Relaxed));
        counter(
            &mut out,
            "jsacc_commands_dead_total",
            "Commands that could not be routed.",
        );
        let _ = writeln!(out, "jsacc_commands_dead_total {}", self.dead.load(Relaxed));
        counter(
            &mut out,
            "jsacc_jobs_finished_total",
            "Results recorded, by state.",
        );
        for (s, c) in STATES.iter().zip(&self.finished) {
            let _ = writeln!(
                out,
                "jsacc_jobs_finished_total{{state=\"{s}\"}} {}",
                c.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "jsacc_rollouts_stopped_total",
            "Rollouts stopped because more than max_failures of their agents failed.",
        );
        let _ = writeln!(
            out,
            "jsacc_rollouts_stopped_total {}",
            self.rollouts_stopped.load(Relaxed)
        );
        counter(
            &mut out,
            "jsacc_stats_batches_total",
            "Stats batches recorded into agents' stats streams.",
        );
        let _ = writeln!(
            out,
            "jsacc_stats_batches_total {}",
            self.stats_batches.load(Relaxed)
        );
        counter(
            &mut out,
            "jsacc_stats_metrics_dropped_total",
            "Metric names whose values were not stored: the agent's latest-values hash was full (--stats-max-metrics).",
        );
        let _ = writeln!(
            out,
            "jsacc_stats_metrics_dropped_total {}",
            self.stats_dropped.load(Relaxed)
        );
        counter(
            &mut out,
            "jsacc_redis_writes_unconfirmed_total",
            "Writes that too few replicas confirmed in time (answered 503 or routed again).",
        );
        let _ = writeln!(
            out,
            "jsacc_redis_writes_unconfirmed_total {}",
            self.not_replicated.load(Relaxed)
        );
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let name = "jsacc_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Agent and operator request latency.\n# TYPE {name} histogram"
        );
        for (route, h) in ROUTES.iter().zip(&self.latency) {
            for (b, bound) in h.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    b.load(Relaxed)
                );
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{route=\"{route}\"}} {}",
                h.sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
        }
        out
    }
}

/// Latest values older than this (ms) are left out of `/metrics/agents`: the metric stopped.
pub const STALE_MS: u64 = 15 * 60 * 1000;

/// An agent (gid, nid) and its `stats:{g:n}:latest` hash.
pub type AgentLatest = ((u64, u64), HashMap<String, String>);

/// The values exported for each metric type, in order.
fn fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["sum", "rate"],
        "gauge" => &["value"],
        "timer" | "histogram" => &["count", "sum", "min", "max", "mean", "p50", "p90", "p99"],
        "set" => &["count"],
        _ => &[],
    }
}

/// A Prometheus metric name for a statsd key and one of its values: `jsagent_<key>_<field>`
/// (a gauge's `value` adds no suffix), every character outside `[a-zA-Z0-9_]` turned into `_`.
pub fn family_name(key: &str, field: &str) -> String {
    let mut name = String::with_capacity(key.len() + field.len() + 9);
    name.push_str("jsagent_");
    name.extend(
        key.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    if field != "value" {
        name.push('_');
        name.push_str(field);
    }
    name
}

/// Renders agents' `stats:{g:n}:latest` hashes (metric key → JSON values) as gauges labelled
/// `gid`, `nid`. Entries older than [`STALE_MS`] or not understood are skipped; when two keys
/// map to one name, the first (by key) wins for each agent.
pub fn render_agent_stats(agents: &[AgentLatest], now_ms: u64) -> String {
    // family → (help, samples); BTreeMap so each family is written once, in a stable order.
    let mut families: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut seen: HashSet<(String, u64, u64)> = HashSet::new();
    for ((gid, nid), latest) in agents {
        let mut keys: Vec<&String> = latest.keys().collect();
        keys.sort();
        for key in keys {
            let Ok(values) = serde_json::from_str::<serde_json::Value>(&latest[key]) else {
                continue;
            };
            let epoch = values["epoch"].as_u64().unwrap_or(0);
            if now_ms.saturating_sub(epoch) > STALE_MS {
                continue;
            }
            let kind = values["type"].as_str().unwrap_or("");
            for field in fields(kind) {
                let Some(v) = values[*field].as_f64() else {
                    continue;
                };
                let family = family_name(key, field);
                if !seen.insert((family.clone(), *gid, *nid)) {
                    continue;
                }
                let help = format!(
                    "statsd {kind} `{}`: {field} over the last flush interval.",
                    escape_help(key)
                );
                let entry = families.entry(family).or_insert_with(|| (help, Vec::new()));
                entry.1.push(format!("{{gid=\"{gid}\",nid=\"{nid}\"}} {v}"));
            }
        }
    }
    let mut out = String::new();
    for (family, (help, samples)) in &families {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} gauge");
        for sample in samples {
            let _ = writeln!(out, "{family}{sample}");
        }
    }
    out
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.routed(2);
        m.finished("OK");
        m.observe("cmd", Duration::from_millis(3));
        m.observe("stats", Duration::from_millis(3));
        m.observe("no such route", Duration::from_millis(3));
        m.stats_recorded(2);
        let text = m.render(&[("jsacc_agents_online", "Agents seen recently.", 1.0)]);
        assert!(text.contains("jsacc_jobs_routed_total 2"));
        assert!(text.contains("jsacc_jobs_finished_total{state=\"OK\"} 1"));
        assert!(text
            .contains("jsacc_http_request_duration_seconds_bucket{route=\"cmd\",le=\"0.005\"} 1"));
        assert!(text
            .contains("jsacc_http_request_duration_seconds_bucket{route=\"cmd\",le=\"0.0025\"} 0"));
        assert!(text.contains("jsacc_http_request_duration_seconds_count{route=\"stats\"} 1"));
        assert!(text.contains("jsacc_http_request_duration_seconds_count{route=\"other\"} 1"));
        assert!(text.contains("jsacc_agents_online 1"));
        assert!(text.contains("jsacc_stats_batches_total 2"));
        m.stats_metrics_dropped(3);
        let text = m.render(&[]);
        assert!(text.contains("# TYPE jsacc_stats_metrics_dropped_total counter"));
        assert!(text.contains("jsacc_stats_metrics_dropped_total 3"));
    }

    #[tokio::test]
    async fn a_burst_of_callers_shares_one_computation() {
        let cache: Cached<u64> = Cached::new(Duration::from_secs(3600));
        let calls = AtomicU64::new(0);
        let gate = tokio::sync::Notify::new();
        // The first caller computes and waits at the gate; the others queue behind it.
        let compute = || async {
            let n = calls.fetch_add(1, Relaxed) + 1;
            gate.notified().await;
            Ok::<u64, ()>(n)
        };
        let burst = futures::future::join_all((0..20).map(|_| cache.get_or_try(compute)));
        let open = async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            gate.notify_one();
        };
        let (values, ()) = tokio::join!(burst, open);
        assert!(values.iter().all(|v| *v == Ok(1)), "{values:?}");
        assert_eq!(calls.load(Relaxed), 1);
        // Fresh: kept.
        let again = cache.get_or_try(|| async { Ok::<u64, ()>(99) }).await;
        assert_eq!(again, Ok(1));
    }

    #[tokio::test]
    async fn a_stale_value_is_computed_again() {
        let cache: Cached<u64> = Cached::new(Duration::ZERO);
        assert_eq!(cache.get_or_try(|| async { Ok::<u64, ()>(1) }).await, Ok(1));
        assert_eq!(cache.get_or_try(|| async { Ok::<u64, ()>(2) }).await, Ok(2));
    }

    #[tokio::test]
    async fn a_failed_computation_is_not_kept() {
        let cache: Cached<u64> = Cached::default();
        let failed = cache.get_or_try(|| async { Err::<u64, &str>("down") });
        assert_eq!(failed.await, Err("down"));
        assert_eq!(
            cache.get_or_try(|| async { Ok::<u64, &str>(7) }).await,
            Ok(7)
        );
        assert_eq!(
            cache.get_or_try(|| async { Ok::<u64, &str>(8) }).await,
            Ok(7)
        );
    }

    fn latest(pairs: &[(&str, serde_json::Value)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn agent_stats_are_gauges_with_gid_and_nid_labels() {
        let now = 1_000_000_000;
        let a = latest(&[
            (
                "ops.web.req",
                serde_json::json!({"type": "counter", "epoch": now, "sum": 25.0, "rate": 2.5}),
            ),
            (
                "ops.web.process.rss",
                serde_json::json!({"type": "gauge", "epoch": now, "value": 1e6}),
            ),
            (
                "old",
                serde_json::json!({"type": "gauge", "epoch": now - STALE_MS - 1, "value": 1}),
            ),
            ("bad", serde_json::json!("not an object")),
        ]);
        let b = latest(&[(
            "ops.web.req",
            serde_json::json!({"type": "counter", "epoch": now, "sum": 1, "rate": 0.1}),
        )]);
        let text = render_agent_stats(&[((1, 1), a), ((1, 2), b)], now);
        assert_eq!(
            text.matches("# TYPE jsagent_ops_web_req_sum gauge").count(),
            1
        );
        assert!(text.contains("jsagent_ops_web_req_sum{gid=\"1\",nid=\"1\"} 25\n"));
        assert!(text.contains("jsagent_ops_web_req_rate{gid=\"1\",nid=\"2\"} 0.1\n"));
        assert!(text.contains("jsagent_ops_web_process_rss{gid=\"1\",nid=\"1\"} 1000000\n"));
        assert!(!text.contains("old") && !text.contains("bad"), "{text}");
    }

    #[test]
    fn keys_that_collide_after_sanitizing_give_one_sample_per_agent() {
        let now = 5;
        let a = latest(&[
            (
                "a.b",
                serde_json::json!({"type": "gauge", "epoch": now, "value": 1}),
            ),
            (
                "a-b",
                serde_json::json!({"type": "gauge", "epoch": now, "value": 2}),
            ),
        ]);
        let text = render_agent_stats(&[((0, 0), a)], now);
        assert_eq!(text.matches("jsagent_a_b{").count(), 1, "{text}");
        assert_eq!(family_name("x.y:z", "p99"), "jsagent_x_y_z_p99");
    }
}
