//! Many idle agents (DESIGN §5.2): parks N long-polls (default 10,000, each with its own agent
//! token and its own HTTP/1.1 connection) on one or more controllers sharing one Redis, and
//! prints the controllers' memory per parked poll, their Redis connections, their CPU and
//! Redis's while everyone is parked, and how fast a command reaches a parked agent. Asserts
//! nothing.
//!
//!     cargo bench -p tests --bench idle
//!     IDLE_AGENTS=50000 cargo bench -p tests --bench idle
//!
//! Settings: IDLE_AGENTS (10000); IDLE_PER_PROCESS, most connections one process holds
//! (15000: a process here may open at most 20,000 files, and that hard limit cannot be raised
//! without CAP_SYS_RESOURCE), which sets how many controllers share the agents (agent i polls
//! controller i mod k) and how many simulator processes hold their connections (this bench
//! re-executed, each from its own source address 127.0.0.s, so no source runs out of ports);
//! IDLE_RATE new polls a second in all (1000: a storm of TLS handshakes on 2 cores outlasts
//! the controllers' handshake deadline, and the agents retry); IDLE_SECS seconds of idle
//! measurement (20); IDLE_WAKES (200); BENCH_BIN_DIR a directory of
//! `jsacc` and `jsagent` to use instead of building release ones.

use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tests::{Controller, ControllerOpts, Redis};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> f64 {
    let info: String = redis::cmd("INFO").arg(section).query(conn).expect("INFO");
    tests::topology::info_fields(&info)
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Agent `i`'s token in run `run` (the simulators derive the same ones).
fn token(run: &str, i: usize) -> String {
    format!("idle-token-{i}-{run}")
}

/// What a simulator process is given (environment variables, set by the parent).
struct SimulatorPlan {
    /// The controllers' base URLs; agent i polls `urls[i % urls.len()]`.
    urls: Vec<String>,
    /// The certificate every controller presents (each its own file).
    certs: Vec<String>,
    /// Agents `first..last` are this simulator's.
    first: usize,
    last: usize,
    /// The source address of its connections.
    source: std::net::IpAddr,
    /// New polls a second (parked faster, handshakes pile up past the controllers' deadlines).
    rate: usize,
    run: String,
}

impl SimulatorPlan {
    fn from_env() -> Option<SimulatorPlan> {
        let var = |k: &str| std::env::var(k).ok();
        let range = var("IDLE_SIM_AGENTS")?;
        let (first, last) = range.split_once("..")?;
        Some(SimulatorPlan {
            urls: var("IDLE_SIM_URLS")?
                .split(',')
                .map(str::to_owned)
                .collect(),
            certs: var("IDLE_SIM_CERTS")?
                .split(',')
                .map(str::to_owned)
                .collect(),
            first: first.parse().ok()?,
            last: last.parse().ok()?,
            source: var("IDLE_SIM_SOURCE")?.parse().ok()?,
            rate: var("IDLE_SIM_RATE")?.parse().ok()?,
            run: var("IDLE_SIM_RUN")?,
        })
    }
}

/// A simulator: parks every one of its agents' polls and loops on them; prints `parked N` as
/// they are sent and `got I` for each command agent I receives.
async fn simulate(plan: SimulatorPlan) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(plan.last - plan.first)
        .local_address(plan.source)
        .timeout(Duration::from_secs(120));
    for cert in &plan.certs {
        let pem = std::fs::read(cert).expect("certificate");
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"));
    }
    let http = builder.build().expect("client");
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let sent = Arc::new(AtomicUsize::new(0));
    // Polls that failed (an error or an answer other than 200/204), reported every 10 s.
    let failed = Arc::new(AtomicUsize::new(0));
    let last_failure = Arc::new(std::sync::Mutex::new(String::new()));
    {
        let (failed, last_failure) = (failed.clone(), last_failure.clone());
        tokio::spawn(async move {
            let mut reported = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let now = failed.load(Ordering::Relaxed);
                if now > reported {
                    let last = last_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    eprintln!(
                        "simulator: {} polls failed in 10 s, e.g. {last}",
                        now - reported
                    );
                    reported = now;
                }
            }
        });
    }
    for i in plan.first..plan.last {
        let url = format!(
            "{}/v1/agents/1/{i}/cmd?wait=55",
            plan.urls[i % plan.urls.len()]
        );
        let (http, token, got_tx, sent) = (
            http.clone(),
            token(&plan.run, i),
            got_tx.clone(),
            sent.clone(),
        );
        let (failed, last_failure) = (failed.clone(), last_failure.clone());
        tokio::spawn(async move {
            let mut counted = false;
            loop {
                let req = http.get(&url).bearer_auth(&token).send();
                if !counted {
                    sent.fetch_add(1, Ordering::Relaxed);
                    counted = true;
                }
                let failure = match req.await.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        let _ = got_tx.send(i);
                        continue;
                    }
                    Ok(204) => continue,
                    Ok(status) => format!("answered {status}"),
                    Err(e) => format!("{e:?}"),
                };
                failed.fetch_add(1, Ordering::Relaxed);
                *last_failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
                // As an agent does: an error is not retried at once.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let step = (plan.rate / 20).max(1);
        if (i - plan.first) % step == step - 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("parked {}", sent.load(Ordering::Relaxed));
    while let Some(i) = got_rx.recv().await {
        println!("got {i}");
    }
}

/// The simulators' processes and what they report.
struct Simulators {
    children: Vec<std::process::Child>,
    /// Agent ids as their commands arrive, with when the line was read.
    got: std::sync::mpsc::Receiver<(usize, Instant)>,
}

impl Simulators {
    fn start(
        n: usize,
        per_process: usize,
        rate: usize,
        controllers: &[Controller],
        run: &str,
    ) -> Simulators {
        let urls: Vec<String> = controllers.iter().map(Controller::url).collect();
        let certs: Vec<String> = controllers
            .iter()
            .map(|c| c.cert().display().to_string())
            .collect();
        let (tx, got) = std::sync::mpsc::channel();
        let mut children = vec![];
        let processes = n.div_ceil(per_process);
        for (s, first) in (0..n).step_by(per_process).enumerate() {
            let last = (first + per_process).min(n);
            let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
                .env("IDLE_SIM_AGENTS", format!("{first}..{last}"))
                .env("IDLE_SIM_URLS", urls.join(","))
                .env("IDLE_SIM_CERTS", certs.join(","))
                .env("IDLE_SIM_SOURCE", format!("127.0.0.{}", 2 + s))
                .env("IDLE_SIM_RUN", run)
                .env("IDLE_SIM_RATE", (rate / processes).max(1).to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("a simulator process");
            let stdout = child.stdout.take().expect("stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(i) = line.strip_prefix("got ").and_then(|i| i.parse().ok()) {
                        let _ = tx.send((i, Instant::now()));
                    }
                }
            });
            children.push(child);
        }
        Simulators { children, got }
    }
}

impl Drop for Simulators {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls parked on one controller, as its `/metrics` says.
fn parked_on(http: &reqwest::blocking::Client, controller: &Controller) -> f64 {
    let text = http
        .get(format!("{}/metrics", controller.url()))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("jsacc_polls_parked "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(plan) = SimulatorPlan::from_env() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(simulate(plan));
        return;
    }
    let (n, per_process, rate, secs, wakes) = (
        env_or("IDLE_AGENTS", 10_000) as usize,
        env_or("IDLE_PER_PROCESS", 15_000).max(1) as usize,
        env_or("IDLE_RATE", 1_000) as usize,
        env_or("IDLE_SECS", 20),
        env_or("IDLE_WAKES", 200),
    );
    std::env::set_var("JSACC_BIN_DIR", tests::bench_bin_dir());
    std::env::set_var("JSACC_LOG", "warn");
    let redis = Redis::start();
    let k = n.div_ceil(per_process);
    // Room for every agent's connection and this benchmark's own.
    let room = n.div_ceil(k) + 100;
    let mut controllers: Vec<Controller> = (0..k)
        .map(|_| {
            let opts = ControllerOpts {
                extra: vec!["--max-connections".into(), room.to_string()],
                ..ControllerOpts::default()
            };
            Controller::start(&redis, opts)
        })
        .collect();
    let pids: Vec<u32> = controllers.iter_mut().map(|c| c.proc().pid()).collect();
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_connection().expect("redis");
    // Connections other than the controllers': this benchmark's own.
    let ours = 1.0;

    // N agents' tokens, stored as `jsacc token add` stores them (hash only).
    let run = uuid::Uuid::new_v4().to_string();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let hash = hex::encode(Sha256::digest(token(&run, i).as_bytes()));
            pipe.hset("auth:agents", format!("1:{i}"), hash).ignore();
        }
        let _: () = pipe.query(&mut conn).expect("tokens");
    }
    let _: () = redis::cmd("INCR")
        .arg("auth:version") // as `jsacc token add` does: controllers look again
        .query(&mut conn)
        .expect("INCR");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
    for c in &controllers {
        let pem = std::fs::read(c.cert()).expect("certificate");
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"));
    }
    let http = http.build().expect("client");
    let rss_before: f64 = pids.iter().map(|&p| rss_mib(p)).sum();
    let redis_before = info_field(&mut conn, "memory", "used_memory_rss") / 1024.0 / 1024.0;

    let start = Instant::now();
    let simulators = Simulators::start(n, per_process, rate, &controllers, &run);
    let parked_now = || controllers.iter().map(|c| parked_on(&http, c)).sum::<f64>();
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 100);
    while parked_now() < n as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let parked = parked_now();
    println!(
        "parked {parked:.0} of {n} long-polls on {k} controller(s) sharing one Redis, from {} \
         simulator process(es), in {:.1} s",
        simulators.children.len(),
        start.elapsed().as_secs_f64()
    );

    let cpu_of = |pids: &[u32]| -> Duration { pids.iter().map(|&p| tests::cpu_time(p)).sum() };
    let (cpu0, rcpu0) = (cpu_of(&pids), tests::cpu_time(redis.pid()));
    std::thread::sleep(Duration::from_secs(secs));
    let percent = |d: Duration| d.as_secs_f64() / secs as f64 * 100.0;
    let cpu = percent(cpu_of(&pids).saturating_sub(cpu0));
    let rcpu = percent(tests::cpu_time(redis.pid()).saturating_sub(rcpu0));
    let clients = info_field(&mut conn, "clients", "connected_clients") - ours;
    let rss: f64 = pids.iter().map(|&p| rss_mib(p)).sum();
    let redis_rss = info_field(&mut conn, "memory", "used_memory_rss") / 1024.0 / 1024.0;
    println!(
        "while parked: controllers' RSS {rss:.0} MiB (+{:.0} MiB, {:.1} KiB per parked poll), \
         {clients:.0} Redis connections of theirs, their CPU {cpu:.1}% and redis-server's {rcpu:.1}% \
         of one core, redis-server RSS {redis_rss:.0} MiB (+{:.0} MiB)",
        rss - rss_before,
        (rss - rss_before) * 1024.0 / parked.max(1.0),
        redis_rss - redis_before,
    );

    // Wake-ups: a command for a random parked agent, one at a time.
    let mut lat = vec![];
    for w in 0..wakes {
        let nid = (w as usize * 7919) % n;
        while simulators.got.try_recv().is_ok() {}
        let sent = Instant::now();
        let cmd = serde_json::json!({"id": format!("wake-{w}-{}", uuid::Uuid::new_v4()), "gid": 1, "nid": nid, "cmd": "ping"});
        let _: i64 = redis::cmd("LPUSH")
            .arg("cmds_queue")
            .arg(cmd.to_string())
            .query(&mut conn)
            .expect("LPUSH");
        loop {
            match simulators.got.recv_timeout(Duration::from_secs(30)) {
                Ok((i, at)) if i == nid => {
                    lat.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                    break;
                }
                Ok(_) => continue,
                Err(_) => panic!("agent 1:{nid} was not woken within 30 s"),
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "wake-up of a parked agent (LPUSH to the simulator's line saying it got the command), \
         {} samples: p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        pct(0.5),
        pct(0.99)
    );
    drop(simulators);
    drop(controllers);
    drop(redis);
}
