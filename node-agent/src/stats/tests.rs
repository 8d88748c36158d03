//! Exact aggregates from known inputs, the handle's seams, and the flush task under paused time.

use std::time::Duration;

use proptest::prelude::*;
use schemas::{Metric, StatsBatch};
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;

use super::aggregate::{percentile, DROPPED_KEY, INVALID_KEY, MAX_KEYS, MAX_SAMPLES};
use super::*;
use crate::store::OutboxKind;

fn find<'a>(metrics: &'a [Metric], key: &str) -> &'a Metric {
    metrics
        .iter()
        .find(|m| m.key == key)
        .unwrap_or_else(|| panic!("no {key} in {metrics:?}"))
}

fn values(m: &Metric) -> Json {
    Json::Object(m.values.clone())
}

#[test]
fn counter_sums_honour_sample_rates() {
    let stats = Stats::new();
    let bad = stats.statsd(
        "ops.web.",
        "req:1|c|@0.1\nreq:1|c|@0.1\nreq:1|c|@0.5\nreq:3|c",
    );
    assert_eq!(bad, 0);
    let flushed = stats.flush(10.0);
    let m = find(&flushed, "ops.web.req");
    assert_eq!(m.kind, "counter");
    // 1/0.1 + 1/0.1 + 1/0.5 + 3 = 25, over 10 s.
    assert_eq!(values(m), json!({"sum": 25.0, "rate": 2.5}));
    assert!(
        stats.flush(10.0).is_empty(),
        "counters restart every interval"
    );
}

#[test]
fn gauges_apply_deltas_and_keep_their_value_across_flushes() {
    let stats = Stats::new();
    stats.statsd("", "temp:10|g\ntemp:+5|g\ntemp:-3.5|g");
    assert_eq!(
        values(find(&stats.flush(1.0), "temp")),
        json!({"value": 11.5})
    );
    assert!(stats.flush(1.0).is_empty(), "an idle gauge is not re-sent");
    stats.statsd("", "temp:+1|g");
    assert_eq!(
        values(find(&stats.flush(1.0), "temp")),
        json!({"value": 12.5})
    );
    stats.statsd("", "fresh:-2|g");
    assert_eq!(
        values(find(&stats.flush(1.0), "fresh")),
        json!({"value": -2.0})
    );
    stats.statsd("", "temp:4|g");
    assert_eq!(
        values(find(&stats.flush(1.0), "temp")),
        json!({"value": 4.0})
    );
}

/// The nearest-rank percentile computed another way: the smallest sample `x` with at least `p`%
/// of the samples `<= x`.
fn reference_percentile(samples: &[f64], p: usize) -> f64 {
    let mut candidates = samples.to_vec();
    candidates.sort_by(f64::total_cmp);
    *candidates
        .iter()
        .find(|x| samples.iter().filter(|v| v <= x).count() * 100 >= p * samples.len())
        .expect("some sample qualifies")
}

#[test]
fn timer_aggregates_match_a_reference_computation() {
    let stats = Stats::new();
    // A fixed, unsorted sample with repeats: 37 values.
    let samples: Vec<f64> = (0..37).map(|i| ((i * 7919) % 53) as f64 / 4.0).collect();
    let block: String = samples
        .iter()
        .map(|v| format!("db.query:{v}|ms\n"))
        .collect();
    assert_eq!(stats.statsd("ops.db.", &block), 0);
    let flushed = stats.flush(10.0);
    let m = find(&flushed, "ops.db.db.query");
    assert_eq!(m.kind, "timer");
    let sum: f64 = samples.iter().sum();
    let min = samples.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = samples.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let want = json!({
        "count": 37.0, "sum": sum, "min": min, "max": max, "mean": sum / 37.0,
        "p50": reference_percentile(&samples, 50), "p90": reference_percentile(&samples, 90),
        "p99": reference_percentile(&samples, 99),
    });
    assert_eq!(values(m), want);
}

#[test]
fn timer_count_is_corrected_by_the_sample_rate() {
    let stats = Stats::new();
    stats.statsd("", "t:10|ms|@0.5\nt:20|ms|@0.5\nh:5|h");
    let flushed = stats.flush(1.0);
    let t = find(&flushed, "t");
    assert_eq!(
        (t.values["count"].clone(), t.values["mean"].clone()),
        (json!(4.0), json!(15.0))
    );
    assert_eq!(find(&flushed, "h").kind, "histogram");
}

#[test]
fn sets_count_unique_members() {
    let stats = Stats::new();
    stats.statsd(
        "ops.web.",
        "users:alice|s\nusers:bob|s\nusers:alice|s\nusers:carol|s\nusers:bob|s",
    );
    let flushed = stats.flush(1.0);
    let m = find(&flushed, "ops.web.users");
    assert_eq!((m.kind.as_str(), values(m)), ("set", json!({"count": 3})));
}

#[test]
fn invalid_lines_are_counted_returned_and_reported() {
    let stats = Stats::new();
    let bad = stats.statsd("j.", "ok:1|c\nnot statsd\nx:1|q\n\nok:2|g");
    // Two lines do not parse, and `ok` is a counter already, so the gauge line is refused too.
    assert_eq!(bad, 3);
    let flushed = stats.flush(1.0);
    assert_eq!(
        values(find(&flushed, "j.ok")),
        json!({"sum": 1.0, "rate": 1.0})
    );
    assert_eq!(find(&flushed, INVALID_KEY).values["sum"], json!(3.0));
}

#[test]
fn process_samples_are_gauges_under_the_prefix() {
    let stats = Stats::new();
    stats.gauges(
        "ops.web.process.",
        &[("cpu_percent", 12.5), ("rss", 1e6), ("threads", 4.0)],
    );
    stats.gauges(
        "ops.web.process.",
        &[("cpu_percent", 30.0), ("rss", 2e6), ("threads", 8.0)],
    );
    let flushed = stats.flush(10.0);
    let keys: Vec<&str> = flushed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ops.web.process.cpu_percent",
            "ops.web.process.rss",
            "ops.web.process.threads"
        ]
    );
    assert!(flushed.iter().all(|m| m.kind == "gauge"));
    assert_eq!(
        find(&flushed, "ops.web.process.rss").values["value"],
        json!(2e6)
    );
}

#[test]
fn timers_past_the_sample_cap_keep_exact_count_sum_min_max() {
    let stats = Stats::new();
    let n = MAX_SAMPLES + 5000;
    let block: String = (0..n).map(|i| format!("t:{i}|ms\n")).collect();
    stats.statsd("", &block);
    let t = stats.flush(1.0).remove(0);
    let total = (n * (n - 1) / 2) as f64;
    assert_eq!(
        (
            &t.values["count"],
            &t.values["sum"],
            &t.values["min"],
            &t.values["max"]
        ),
        (
            &json!(n as f64),
            &json!(total),
            &json!(0.0),
            &json!((n - 1) as f64)
        )
    );
}

#[test]
fn new_keys_past_the_cap_are_dropped_and_counted() {
    let stats = Stats::new();
    let block: String = (0..MAX_KEYS + 3).map(|i| format!("k{i}:1|c\n")).collect();
    assert_eq!(stats.statsd("", &block), 0);
    let flushed = stats.flush(1.0);
    assert_eq!(flushed.len(), MAX_KEYS + 1);
    assert_eq!(find(&flushed, DROPPED_KEY).values["sum"], json!(3.0));
}

#[test]
fn large_flushes_are_split_into_batches() {
    let stats = Stats::new();
    let block: String = (0..1200).map(|i| format!("k{i}:1|c\n")).collect();
    stats.statsd("", &block);
    let rows = batches(1, 2, 5, 10.0, stats.flush(10.0));
    let sizes: Vec<usize> = rows
        .iter()
        .map(|r| serde_json::from_str::<StatsBatch>(r).unwrap().metrics.len())
        .collect();
    assert_eq!(sizes, [MAX_BATCH_METRICS, MAX_BATCH_METRICS, 200]);
}

#[tokio::test(start_paused = true)]
async fn the_flush_task_queues_schema_valid_batches() {
    let kit = crate::testkit::kit("stats-flush").await;
    let stats = Stats::new();
    let stop = CancellationToken::new();
    let task = tokio::spawn(stats.clone().run(
        kit.store.clone(),
        1,
        2,
        Duration::from_secs(10),
        stop.clone(),
    ));
    stats.statsd("ops.web.", "req:5|c\nlat:3|ms\nusers:a|s\ntemp:2|g");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rows = loop {
        let rows = kit.store.outbox_take(OutboxKind::Stats, 10).await.unwrap();
        if !rows.is_empty() {
            break rows;
        }
        kit.store.outbox_added().await;
    };
    let schema_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/stats_batch.schema.json"
    );
    let schema: Json =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc: Json = serde_json::from_str(&rows[0].body).unwrap();
    assert!(validator.is_valid(&doc), "{doc}");
    let batch: StatsBatch = serde_json::from_value(doc).unwrap();
    // The host's own gauges come with every flush.
    let (host, own): (Vec<_>, Vec<_>) = batch
        .metrics
        .iter()
        .partition(|m| m.key.starts_with(super::HOST_PREFIX));
    assert_eq!(
        (batch.gid, batch.nid, batch.interval, own.len(), host.len()),
        (1, 2, 10.0, 4, 3)
    );
    assert_eq!(
        find(&batch.metrics, "ops.web.req").values["rate"],
        json!(0.5)
    );
    stop.cancel();
    task.await.unwrap();
    std::fs::remove_dir_all(kit.dir).unwrap();
}

proptest! {
    #[test]
    fn timer_summaries_are_ordered_and_drawn_from_the_samples(
        samples in prop::collection::vec(-1e6f64..1e6, 1..200)
    ) {
        let stats = Stats::new();
        let block: String = samples.iter().map(|v| format!("t:{v}|ms\n")).collect();
        prop_assert_eq!(stats.statsd("", &block), 0);
        let t = stats.flush(1.0).remove(0);
        let get = |f: &str| t.values[f].as_f64().unwrap();
        prop_assert!(get("min") <= get("p50") && get("p50") <= get("p90"));
        prop_assert!(get("p90") <= get("p99") && get("p99") <= get("max"));
        for p in ["p50", "p90", "p99"] {
            prop_assert!(samples.contains(&get(p)));
        }
        for (p, want) in [(50, "p50"), (90, "p90"), (99, "p99")] {
            prop_assert_eq!(reference_percentile(&samples, p), get(want));
        }
    }

    #[test]
    fn counter_sums_equal_the_rate_corrected_total(
        incs in prop::collection::vec((0u32..1000, prop::sample::select(vec![1.0, 0.5, 0.25])), 1..50)
    ) {
        let stats = Stats::new();
        let block: String = incs.iter().map(|(v, r)| format!("c:{v}|c|@{r}\n")).collect();
        stats.statsd("", &block);
        let want: f64 = incs.iter().map(|(v, r)| *v as f64 / r).sum();
        prop_assert_eq!(stats.flush(2.0)[0].values["sum"].as_f64().unwrap(), want);
    }
}

#[test]
fn percentile_of_small_samples() {
    assert_eq!(percentile(&[], 50), 0.0);
    assert_eq!(percentile(&[7.0], 99), 7.0);
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(
        (percentile(&v, 50), percentile(&v, 90), percentile(&v, 99)),
        (50.0, 90.0, 99.0)
    );
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50), 2.0);
}

#[test]
fn the_hosts_cpu_and_memory_are_sampled_as_gauges() {
    let mut host = super::HostSampler::new();
    let sample = host.sample();
    let value = |name: &str| sample.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let (used, total) = (value("mem_used").unwrap(), value("mem_total").unwrap());
    assert!(
        total > 0.0 && used > 0.0 && used <= total,
        "{used} of {total}"
    );
    let cpu = value("cpu_percent").unwrap();
    assert!((0.0..=100.0 * 1024.0).contains(&cpu), "{cpu}");
    let stats = Stats::new();
    stats.gauges(super::HOST_PREFIX, &sample);
    let keys: Vec<String> = stats.flush(1.0).into_iter().map(|m| m.key).collect();
    assert!(
        keys.contains(&"jsagent.host.mem_total".to_owned()),
        "{keys:?}"
    );
}
