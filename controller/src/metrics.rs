//! Counters and histograms of this instance, rendered as Prometheus text on `GET /metrics`
//! together with gauges read from Redis at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const STATES: [&str; 4] = ["OK", "ERROR", "TIMEOUT", "KILLED"];
/// Request kinds with their own latency histogram.
pub const ROUTES: [&str; 5] = ["hello", "cmd", "result", "other", "operator"];

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
    latency: [Histogram; ROUTES.len()],
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

    pub fn observe(&self, route: &str, took: Duration) {
        let i = ROUTES
            .iter()
            .position(|r| *r == route)
            .unwrap_or(ROUTES.len() - 2);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.routed(2);
        m.finished("OK");
        m.observe("cmd", Duration::from_millis(3));
        let text = m.render(&[("jsacc_agents_online", "Agents seen recently.", 1.0)]);
        assert!(text.contains("jsacc_jobs_routed_total 2"));
        assert!(text.contains("jsacc_jobs_finished_total{state=\"OK\"} 1"));
        assert!(text
            .contains("jsacc_http_request_duration_seconds_bucket{route=\"cmd\",le=\"0.005\"} 1"));
        assert!(text
            .contains("jsacc_http_request_duration_seconds_bucket{route=\"cmd\",le=\"0.0025\"} 0"));
        assert!(text.contains("jsacc_agents_online 1"));
    }
}
