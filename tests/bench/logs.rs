//! Log throughput (issue 4). Prints figures; asserts nothing.
//!
//!     cargo bench -p tests --bench logs
//!
//! 1. Parsed and stored by one agent: a `seq 1 N` process writes as fast as it can; its stdout is
//!    read, parsed (DESIGN §6.1) and stored in the SQLite log store with its query indexes, by
//!    the agent's own code (`node_agent::supervisor::output`, `logger`, `logstore`) in this process. Timed
//!    from the spawn until every line is committed.
//!    Run with live output (issue 12) off, on (the default cap of 10,000 lines per run) and on
//!    without a cap (every line into the outbox), interleaved BENCH_REPEAT times; prints the
//!    median of each and its ratio to "off".
//! 2. Forwarded end to end: release `jsacc` + `jsagent` + redis-server; a job `seq 1 M` with
//!    `loglevels_ac = "1"`: timed from the push until `log.bench.forward` holds M entries.
//!
//! Settings (environment): BENCH_LINES (1000000) and BENCH_REPEAT (3) for 1,
//! BENCH_FORWARD_LINES (300000) for 2 (0 skips it).

use std::process::Stdio;
use std::time::{Duration, Instant};

use node_agent::config::{Config, FileConfig, Flags};
use node_agent::logs::Logs;
use node_agent::store::Store;
use node_agent::supervisor::output::Readers;
use serde_json::json;
use tests::{execute, wait_for, Cluster, ControllerOpts};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &std::path::Path) -> Config {
    let flags = Flags {
        controller: Some("http://127.0.0.1:1".into()),
        gid: Some(1),
        nid: Some(1),
        data_dir: Some(dir.to_owned()),
        ..Default::default()
    };
    Config::resolve(flags, FileConfig::default(), Some("t".into()), "/".into()).expect("config")
}

/// Live output settings of a run of the "stored" bench.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Live {
    Off,
    /// On, with the default cap per run.
    Capped,
    /// On, every line forwarded.
    Uncapped,
}

impl Live {
    const ALL: [Live; 3] = [Live::Off, Live::Capped, Live::Uncapped];

    fn name(self) -> &'static str {
        match self {
            Live::Off => "live output off",
            Live::Capped => "live output on (cap 10000/run)",
            Live::Uncapped => "live output on (no cap)",
        }
    }
}

/// Lines per second parsed and stored by the agent's code, from one fast writer.
async fn stored(lines: u64, live: Live) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    config.output = live != Live::Off;
    if live == Live::Uncapped {
        config.output_max_lines = usize::MAX / 2;
    }
    let outbox = Store::open(&dir.path().join("agent.db"))
        .await
        .expect("store");
    let logs = Logs::start(&config, outbox, None).await.expect("logs");
    let args = serde_json::from_value(json!({"domain": "bench", "name": "seq"})).expect("args");
    let logger = logs.job_logger("bench", &args).expect("logger");
    let start = Instant::now();
    let mut child = tokio::process::Command::new("seq")
        .args(["1", &lines.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("seq");
    let readers = Readers::start(
        child.stdout.take(),
        None::<tokio::process::ChildStderr>,
        Some(logger),
    );
    let _ = child.wait().await;
    readers.drain().await;
    logs.flush().await;
    let took = start.elapsed();
    let db = dir.path().join("logs").join("current.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    let count: u64 = conn
        .query_row("SELECT COUNT(*) FROM logs", [], |r| r.get(0))
        .expect("count");
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(db.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    let agent_db = rusqlite::Connection::open(dir.path().join("agent.db")).expect("open");
    let (rows, output_bytes): (u64, u64) = agent_db
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox WHERE kind = 'output'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count");
    println!(
        "stored, {}: {count} of {lines} lines in {:.2} s = {:.0} lines/s ({:.1} MB on disk, current.db only; live output: {rows} outbox rows, {:.1} MB)",
        live.name(),
        took.as_secs_f64(),
        lines as f64 / took.as_secs_f64(),
        size as f64 / 1e6,
        output_bytes as f64 / 1e6,
    );
    lines as f64 / took.as_secs_f64()
}

/// Each setting of [`Live`] `repeat` times, interleaved; prints the medians and their ratios.
async fn stored_with_and_without_live_output(lines: u64, repeat: u64) {
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); Live::ALL.len()];
    for _ in 0..repeat.max(1) {
        for (i, live) in Live::ALL.into_iter().enumerate() {
            rates[i].push(stored(lines, live).await);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let off = median(&mut rates[0]);
    for (i, live) in Live::ALL.into_iter().enumerate() {
        let m = median(&mut rates[i]);
        println!(
            "stored, median of {}, {}: {m:.0} lines/s = {:.3} x off",
            rates[i].len(),
            live.name(),
            m / off
        );
    }
}

/// Lines per second from a job's stdout into its Redis stream, through jsagent and jsacc.
fn forwarded(lines: u64) -> f64 {
    std::env::set_var("JSACC_BIN_DIR", tests::bench_bin_dir());
    std::env::set_var("JSACC_LOG", "warn");
    // The stream must hold every line: its cap above the count.
    let opts = ControllerOpts {
        extra: vec!["--log-maxlen".into(), (lines + 1000).to_string()],
        ..Default::default()
    };
    let cluster = Cluster::start_with(&[&[]], opts);
    let client = &cluster.client;
    let mut conn = client.blocking();
    let mut cmd = execute(1, 1, "seq", &["1", &lines.to_string()]);
    cmd["args"]["domain"] = json!("bench");
    cmd["args"]["name"] = json!("forward");
    cmd["args"]["loglevels_ac"] = json!("1");
    let start = Instant::now();
    client.push(&cmd);
    wait_for("every line in Redis", Duration::from_secs(600), || {
        let n: u64 = redis::cmd("XLEN")
            .arg("log.bench.forward")
            .query(&mut conn)
            .ok()?;
        (n >= lines).then_some(())
    });
    let took = start.elapsed();
    println!(
        "forwarded: {lines} lines into log.bench.forward in {:.2} s = {:.0} lines/s",
        took.as_secs_f64(),
        lines as f64 / took.as_secs_f64()
    );
    lines as f64 / took.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(stored_with_and_without_live_output(
        env_or("BENCH_LINES", 1_000_000),
        env_or("BENCH_REPEAT", 3),
    ));
    let forward = env_or("BENCH_FORWARD_LINES", 300_000);
    if forward > 0 {
        forwarded(forward);
    }
}
