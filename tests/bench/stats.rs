//! The stats path of one agent (DESIGN §7). Prints figures; asserts nothing.
//!
//!     cargo bench -p tests --bench stats
//!
//! 1. Level-10 aggregation: blocks as a job prints them (10 metrics of all five types per block,
//!    180 names per job) fed to one [`Stats`] handle by one thread — metrics aggregated per
//!    second on one core, with a flush every 500,000 metrics.
//! 2. UDP: a sender thread sends datagrams of 20 counter lines to a [`StatsdListener`] on
//!    127.0.0.1, paced at BENCH_UDP_RATE metrics/s, then unpaced; received metrics are the
//!    aggregated counter sum, so the loss rate is exact.
//!
//! Settings (environment): BENCH_SECS per phase (3), BENCH_UDP_RATE (500000).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use node_agent::stats::udp::StatsdListener;
use node_agent::stats::Stats;
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Ten lines of every type, as a job's level-10 block.
fn blocks() -> Vec<String> {
    (0..20)
        .map(|i| {
            format!(
                "requests.{i}:1|c\nbytes.{i}:512|c|@0.5\nlatency.{i}:12.{i}|ms\n\
                 size.{i}:{i}00|h\nqueue.{i}:+1|g\nqueue.{i}:-1|g\ntemp.{i}:21.5|g\n\
                 users.{i}:user{i}|s\nlatency.{i}:3.{i}|ms\nerrors.{i}:1|c"
            )
        })
        .collect()
}

fn aggregation(secs: u64) {
    let stats = Stats::new();
    let blocks = blocks();
    let per_block = blocks[0].lines().count() as u64;
    let (mut metrics, mut since_flush, mut flushes) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    while Instant::now() < deadline {
        for block in &blocks {
            let invalid = stats.statsd("ops.web.", block);
            debug_assert_eq!(invalid, 0);
        }
        metrics += per_block * blocks.len() as u64;
        since_flush += per_block * blocks.len() as u64;
        if since_flush >= 500_000 {
            std::hint::black_box(stats.flush(1.0));
            since_flush = 0;
            flushes += 1;
        }
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "level-10 aggregation: {metrics} metrics in {took:.2} s = {:.0} metrics/s on one thread \
         ({flushes} flushes, {} distinct keys per job)",
        metrics as f64 / took,
        per_block as usize * blocks.len() - blocks.len()
    );
}

/// Sends `secs` of datagrams (20 lines each) at `rate` metrics/s (0: as fast as possible);
/// returns (sent metrics, received metrics, seconds).
fn udp_run(secs: u64, rate: u64) -> (u64, u64, f64) {
    let stats = Stats::new();
    let stop = CancellationToken::new();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let receiver = {
        let (stats, stop) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = StatsdListener::bind("127.0.0.1:0".parse().expect("addr"), stats)
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                listener.run(stop).await;
            });
        })
    };
    let addr = addr_rx.recv().expect("listener address");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    let lines = 20u64;
    let datagram: String = (0..lines).map(|i| format!("bench.udp.{i}:1|c\n")).collect();
    let gap = (rate > 0).then(|| Duration::from_secs_f64(lines as f64 / rate as f64));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut next = start;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        if let Some(gap) = gap {
            next += gap;
            while Instant::now() < next {
                std::hint::spin_loop();
            }
        }
        if socket.send_to(datagram.as_bytes(), addr).is_ok() {
            sent += lines;
        }
    }
    let took = start.elapsed().as_secs_f64();
    // Let the listener drain its buffer.
    std::thread::sleep(Duration::from_millis(500));
    stop.cancel();
    receiver.join().expect("receiver thread");
    let received: f64 = stats
        .flush(1.0)
        .iter()
        .filter(|m| m.key.starts_with("bench.udp."))
        .filter_map(|m| m.values["sum"].as_f64())
        .sum();
    (sent, received as u64, took)
}

fn udp(secs: u64, rate: u64) {
    for (label, rate) in [("paced", rate), ("unpaced", 0)] {
        let (sent, received, took) = udp_run(secs, rate);
        let loss = 1.0 - received as f64 / sent.max(1) as f64;
        println!(
            "udp statsd ({label}{}): sent {sent} metrics in {took:.2} s = {:.0} metrics/s; \
             received {received} = {:.0} metrics/s; loss {:.4}%",
            if rate > 0 {
                format!(" at {rate}/s")
            } else {
                String::new()
            },
            sent as f64 / took,
            received as f64 / took,
            loss * 100.0
        );
    }
}

fn main() {
    let secs = env_or("BENCH_SECS", 3);
    aggregation(secs);
    udp(secs, env_or("BENCH_UDP_RATE", 500_000));
}
