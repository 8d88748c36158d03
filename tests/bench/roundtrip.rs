//! Round trips through the whole stack (DESIGN §5): a client pushes into Redis, jsacc routes
//! over HTTPS to jsagent, the result comes back through Redis. Prints figures; asserts nothing.
//!
//!     cargo bench -p tests --bench roundtrip
//!
//! Settings (environment): BENCH_AGENTS (4), BENCH_CLIENTS client processes (4), BENCH_INFLIGHT
//! jobs in flight per client process (16), BENCH_SECS per phase (10), BENCH_REDIS the Redis
//! topology: `standalone` (default), `sentinel` (1 primary, 2 replicas, 3 sentinels) or
//! `cluster` (3 primaries, 3 replicas); BENCH_BIN_DIR a directory of `jsacc` and `jsagent` to
//! use instead of building release ones (absolute, or relative to the workspace root).
//! Release builds of jsacc and jsagent are used; TLS is on (the controller's self-signed
//! certificate). The bench re-executes itself as each client process.
//!
//! On a standalone Redis it first runs the same clients against the bare relay
//! ([`bare_relay`]: the least work any relay of this shape must do, in this process) and prints
//! jsacc's figures as a ratio of the bare relay's, measured in the same run.

mod bare_relay;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tests::{Agent, Controller, ControllerOpts, Redis, RedisCluster, RedisTarget, SentinelSet};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One client process: `threads` closed loops (or paced loops at `rate` jobs/s in total) of
/// LPUSH + BLPOP for `secs` seconds; prints one latency (µs) per line to stdout.
fn client(url: &str, agents: u64, threads: u64, secs: u64, cmd: &str, rate: f64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, cmd) = (url.to_owned(), cmd.to_owned());
            std::thread::spawn(move || {
                let client = tests::RedisClient::new(&url);
                let mut conn = client.blocking();
                let interval = (rate > 0.0).then(|| Duration::from_secs_f64(threads as f64 / rate));
                let mut next = Instant::now() + interval.map(|i| i.mul_f64(t as f64 / threads as f64)).unwrap_or_default();
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    if interval.is_some() {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                    }
                    // Latency counts from the scheduled send time when paced (no coordinated omission).
                    let start = if interval.is_some() { next } else { Instant::now() };
                    let id = format!("b{}-{t}-{i}", std::process::id());
                    let nid = (t + i) % agents + 1;
                    let body = if cmd == "ping" {
                        json!({"id": id, "gid": 1, "nid": nid, "cmd": "ping"})
                    } else {
                        json!({"id": id, "gid": 1, "nid": nid, "cmd": "execute", "args": {"cmd": cmd}})
                    };
                    let _: i64 = redis::cmd("LPUSH").arg("cmds_queue").arg(body.to_string()).query(&mut conn).expect("LPUSH");
                    let got: Option<(String, String)> =
                        redis::cmd("BLPOP").arg(format!("cmds_queue_{id}")).arg(30).query(&mut conn).expect("BLPOP");
                    assert!(got.is_some(), "no result for {id} within 30 s");
                    lat.push(start.elapsed().as_micros() as u64);
                    i += 1;
                    if let Some(iv) = interval {
                        next += iv;
                    }
                }
                lat
            })
        })
        .collect();
    let mut out = String::new();
    for h in handles {
        for l in h.join().expect("client thread") {
            out.push_str(&format!("{l}\n"));
        }
    }
    print!("{out}");
}

struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    n: usize,
    /// CPU µs per job of: redis-server, jsacc, all agents, everything else (clients, kernel, …).
    cpu: [f64; 4],
    /// Per job, at the Redis server of `url`: the reads of its event loop (a request, or a
    /// pipeline of them, from one connection: round trips) and the commands it ran.
    redis: [f64; 2],
}

/// `total_reads_processed` and `total_commands_processed` of the Redis server at `url` (its
/// primary behind sentinels); NaN on a cluster, whose work is spread over its nodes.
fn redis_counters(url: &str) -> [f64; 2] {
    let client = tests::RedisClient::new(url);
    if client.topology() == "cluster" {
        return [f64::NAN; 2];
    }
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut client.blocking())
        .expect("INFO stats");
    let fields = tests::topology::info_fields(&info);
    let field = |name: &str| {
        fields
            .get(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    [
        field("total_reads_processed"),
        field("total_commands_processed"),
    ]
}

/// The processes whose CPU is accounted: redis (every process of the topology), controller, agents.
struct Pids {
    redis: Vec<u32>,
    controller: u32,
    agents: Vec<u32>,
}

impl Pids {
    fn sample(&self) -> [Duration; 4] {
        let agents = self.agents.iter().map(|p| tests::cpu_time(*p)).sum();
        [
            self.redis.iter().map(|p| tests::cpu_time(*p)).sum(),
            tests::cpu_time(self.controller),
            agents,
            total_cpu(),
        ]
    }
}

/// CPU time of the whole machine (all cores, not idle), from /proc/stat.
fn total_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum::<u64>();
    Duration::from_millis(busy * 10)
}

/// Runs `procs` client processes at once and gathers their latencies.
#[allow(clippy::too_many_arguments)]
fn phase(
    url: &str,
    pids: &Pids,
    agents: u64,
    procs: u64,
    threads: u64,
    secs: u64,
    cmd: &str,
    rate: f64,
) -> Figures {
    let exe = std::env::current_exe().expect("own path");
    let counted = redis_counters(url);
    let before = pids.sample();
    let started = Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|_| {
            Command::new(&exe)
                .env(
                    "BENCH_CLIENT",
                    format!(
                        "{url}|{agents}|{threads}|{secs}|{cmd}|{}",
                        rate / procs as f64
                    ),
                )
                .stdout(Stdio::piped())
                .spawn()
                .expect("client process")
        })
        .collect();
    let mut lat: Vec<u64> = vec![];
    for c in children {
        let out = c.wait_with_output().expect("client output");
        assert!(out.status.success(), "a client process failed");
        lat.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.parse::<u64>().ok()),
        );
    }
    let elapsed = started.elapsed().as_secs_f64().max(secs as f64);
    let after = pids.sample();
    let counters = redis_counters(url);
    let used: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.saturating_sub(*b).as_secs_f64() * 1e6)
        .collect();
    let per_job = |us: f64| us / lat.len().max(1) as f64;
    let cpu = [
        per_job(used[0]),
        per_job(used[1]),
        per_job(used[2]),
        per_job(used[3] - used[0] - used[1] - used[2]),
    ];
    let redis = [0, 1].map(|i| per_job(counters[i] - counted[i]));
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Figures {
        rate: lat.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        n: lat.len(),
        cpu,
        redis,
    }
}

fn print_cpu(f: &Figures) {
    let [r, c, a, o] = f.cpu;
    println!("    CPU per job: redis-server {r:.0} µs, jsacc {c:.0} µs, jsagents {a:.0} µs, clients and the rest {o:.0} µs");
    print_redis(f);
}

fn print_redis(f: &Figures) {
    let [reads, commands] = f.redis;
    if reads.is_nan() {
        return;
    }
    println!("    Redis per job: {reads:.1} reads (round trips), {commands:.1} commands");
}

/// The same clients against the bare relay: its closed-loop rate and its single-client figures.
fn bare_phases(
    url: &str,
    redis: &dyn RedisTarget,
    agents: u64,
    procs: u64,
    inflight: u64,
    secs: u64,
) -> (Figures, Figures) {
    let relay = bare_relay::start(url, agents);
    let pids = Pids {
        redis: redis.pids(),
        controller: std::process::id(),
        agents: vec![],
    };
    println!(
        "bare relay: plain HTTP on port {}, {agents} simulated agents, in this process",
        relay.port
    );
    let f = phase(url, &pids, agents, procs, inflight, secs, "ping", 0.0);
    println!(
        "bare relay ping, closed loop, {} in flight: {:.0} round trips/s, p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
        procs * inflight, f.rate, f.p50, f.p99, f.n
    );
    let [r, c, _, o] = f.cpu;
    println!("    CPU per job: redis-server {r:.0} µs, relay and agents {c:.0} µs, clients and the rest {o:.0} µs");
    print_redis(&f);
    let s = phase(url, &pids, agents, 1, 1, secs, "ping", 0.0);
    println!(
        "bare relay ping, one client, one in flight: p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
        s.p50, s.p99, s.n
    );
    print_redis(&s);
    // Stopped before jsacc starts: its router pops `cmds_queue` too.
    drop(relay);
    (f, s)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} GiB, Linux {}", kernel.trim())
}

/// Spawns and reaps `/bin/true` from one thread for `secs`: the machine's raw spawn rate.
fn raw_spawn_rate(secs: u64) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        Command::new("/bin/true").status().expect("spawn /bin/true");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if let Ok(spec) = std::env::var("BENCH_CLIENT") {
        let p: Vec<&str> = spec.split('|').collect();
        let num = |i: usize| p[i].parse::<u64>().expect("number");
        client(
            p[0],
            num(1),
            num(2),
            num(3),
            p[4],
            p[5].parse().expect("rate"),
        );
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probes
    }
    let (agents, procs, inflight, secs) = (
        env_or("BENCH_AGENTS", 4),
        env_or("BENCH_CLIENTS", 4),
        env_or("BENCH_INFLIGHT", 16),
        env_or("BENCH_SECS", 10),
    );
    std::env::set_var("JSACC_BIN_DIR", tests::bench_bin_dir());
    std::env::set_var("JSACC_LOG", "warn");
    std::env::set_var("JSAGENT_LOG", "warn");
    println!("machine: {}", machine());
    let topology = std::env::var("BENCH_REDIS").unwrap_or_else(|_| "standalone".into());
    let (redis, shape): (Box<dyn RedisTarget>, &str) = match topology.as_str() {
        "standalone" => (Box::new(Redis::start()), "one redis-server"),
        "sentinel" => (
            Box::new(SentinelSet::start()),
            "1 primary + 2 replicas + 3 sentinels",
        ),
        "cluster" => (
            Box::new(RedisCluster::start()),
            "Redis Cluster, 3 primaries + 3 replicas",
        ),
        other => panic!("BENCH_REDIS={other}: use standalone, sentinel or cluster"),
    };
    let redis = &*redis;
    let url = redis.url();
    println!("redis: {topology} ({shape}), {url}");
    let bare =
        (topology == "standalone").then(|| bare_phases(&url, redis, agents, procs, inflight, secs));
    let controller = Controller::start(redis, ControllerOpts::default());
    let mut controller = controller;
    let mut agent_procs: Vec<Agent> = (1..=agents)
        .map(|nid| Agent::start(redis, &controller, 1, nid, &[]))
        .collect();
    let pids = Pids {
        redis: redis.pids(),
        controller: controller.proc().pid(),
        agents: agent_procs.iter_mut().map(|a| a.proc().pid()).collect(),
    };
    // Let every agent say hello and park its first poll.
    let client = redis.client();
    for nid in 1..=agents {
        let r = client.run(
            &json!({"id": format!("warm-{nid}"), "gid": 1, "nid": nid, "cmd": "ping"}),
            Duration::from_secs(30),
        );
        assert_eq!(r["state"], "OK");
    }
    println!("stack: redis {topology}, 1 jsacc (HTTPS, self-signed), {agents} jsagent, {procs} client processes");

    let f = phase(&url, &pids, agents, procs, inflight, secs, "ping", 0.0);
    println!(
        "ping, closed loop, {} in flight: {:.0} round trips/s, p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
        procs * inflight, f.rate, f.p50, f.p99, f.n
    );
    print_cpu(&f);
    let one = phase(&url, &pids, agents, 1, 1, secs, "ping", 0.0);
    println!(
        "ping, one client, one in flight: p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
        one.p50, one.p99, one.n
    );
    print_redis(&one);
    match &bare {
        Some((bf, bs)) => {
            println!(
                "ping: {:.0} round trips/s = {:.2} × the bare relay ({:.0}/s, same run)",
                f.rate,
                f.rate / bf.rate,
                bf.rate
            );
            println!(
                "ping, one client: p50 {:.2} ms = {:.2} × the bare relay ({:.2} ms, same run)",
                one.p50,
                one.p50 / bs.p50,
                bs.p50
            );
        }
        None => {
            println!("(the bare relay runs on a standalone Redis only: no ratio for {topology})")
        }
    }
    let half = f.rate / 2.0;
    let h = phase(&url, &pids, agents, procs, inflight, secs, "ping", half);
    println!(
        "ping, paced at {half:.0}/s: {:.0} round trips/s, p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
        h.rate, h.p50, h.p99, h.n
    );
    print_cpu(&h);
    let e = phase(&url, &pids, agents, procs, inflight, secs, "/bin/true", 0.0);
    println!(
        "execute /bin/true, closed loop, {} in flight: {:.0} jobs/s, p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
        procs * inflight, e.rate, e.p50, e.p99, e.n
    );
    print_cpu(&e);
    let raw = raw_spawn_rate(secs.min(5));
    println!(
        "raw spawn+wait of /bin/true, one thread, this machine: {raw:.0}/s; ratio {:.2}",
        e.rate / raw
    );
}
