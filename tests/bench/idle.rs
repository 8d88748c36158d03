//! Many idle agents on one controller (DESIGN §5.2): parks N long-polls (default 10,000, each
//! with its own agent token, one HTTP/1.1 connection each) and prints the controller's memory,
//! its Redis connections, its CPU while everyone is parked, and how fast a command reaches a
//! parked agent. Asserts nothing.
//!
//!     cargo bench -p tests --bench idle
//!
//! Settings: IDLE_AGENTS (10000), IDLE_SECS seconds of idle measurement (20), IDLE_WAKES (200).

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

fn redis_clients(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query(conn).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (n, secs, wakes) = (
        env_or("IDLE_AGENTS", 10_000),
        env_or("IDLE_SECS", 20),
        env_or("IDLE_WAKES", 200),
    );
    std::env::set_var("JSACC_BIN_DIR", tests::release_bin_dir());
    std::env::set_var("JSACC_LOG", "warn");
    let redis = Redis::start();
    // Room for every agent's connection and this benchmark's own (`--max-connections` is
    // 10,000 by default: at 10,000 agents the scrape of /metrics found no room).
    let opts = ControllerOpts {
        extra: vec!["--max-connections".into(), (n + 100).to_string()],
        ..ControllerOpts::default()
    };
    let mut controller = Controller::start(&redis, opts);
    let jsacc = controller.proc().pid();
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_connection().expect("redis");
    // Connections other than jsacc's: this benchmark's own.
    let ours = 1;

    // N agents' tokens, stored as `jsacc token add` stores them (hash only).
    let tokens: Vec<String> = (0..n)
        .map(|i| format!("idle-token-{i}-{}", uuid::Uuid::new_v4()))
        .collect();
    let mut pipe = redis::pipe();
    for (i, t) in tokens.iter().enumerate() {
        pipe.hset(
            "auth:agents",
            format!("1:{i}"),
            hex::encode(Sha256::digest(t.as_bytes())),
        )
        .ignore();
    }
    pipe.incr("auth:version", 1).ignore(); // as `jsacc token add` does: controllers look again
    let _: () = pipe.query(&mut conn).expect("tokens");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(controller.cert()).expect("certificate");
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(n as usize)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let url = controller.url();
    let rss_before = rss_mib(jsacc);

    // Park every agent's poll: each loops on `cmd?wait=55` and reports what it received.
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let parked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    for (i, token) in tokens.into_iter().enumerate() {
        let (http, url, got_tx, parked) =
            (http.clone(), url.clone(), got_tx.clone(), parked.clone());
        tokio::spawn(async move {
            let mut counted = false;
            loop {
                let req = http
                    .get(format!("{url}/v1/agents/1/{i}/cmd?wait=55"))
                    .bearer_auth(&token)
                    .send();
                if !counted {
                    parked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    counted = true;
                }
                match req.await {
                    Ok(r) if r.status() == 200 => {
                        let _ = got_tx.send((i, Instant::now()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await; // do not stampede the accept queue
        }
    }
    // Wait until the controller reports them parked.
    let metrics_url = format!("{url}/metrics");
    let parked_now = || async {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("jsacc_polls_parked "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while parked_now().await.unwrap_or(0.0) < n as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let parked_count = parked_now().await.unwrap_or(0.0);
    println!(
        "parked {parked_count:.0} of {n} long-polls in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let cpu0 = tests::cpu_time(jsacc);
    let rcpu0 = tests::cpu_time(redis.pid());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = tests::cpu_time(jsacc).saturating_sub(cpu0).as_secs_f64() / secs as f64 * 100.0;
    let rcpu = tests::cpu_time(redis.pid())
        .saturating_sub(rcpu0)
        .as_secs_f64()
        / secs as f64
        * 100.0;
    let clients = redis_clients(&mut conn).saturating_sub(ours);
    println!(
        "while parked: jsacc RSS {:.0} MiB (+{:.0} MiB, {:.1} KiB per parked poll), {clients} Redis connections of jsacc, \
         jsacc CPU {cpu:.1}% and redis-server CPU {rcpu:.1}% of one core",
        rss_mib(jsacc),
        rss_mib(jsacc) - rss_before,
        (rss_mib(jsacc) - rss_before) * 1024.0 / parked_count.max(1.0)
    );

    // Wake-ups: a command for a random parked agent, one at a time.
    let mut lat = vec![];
    for k in 0..wakes {
        let nid = (k * 7919) % n;
        while got_rx.try_recv().is_ok() {}
        let sent = Instant::now();
        let cmd = serde_json::json!({"id": format!("wake-{k}-{}", uuid::Uuid::new_v4()), "gid": 1, "nid": nid, "cmd": "ping"});
        let _: i64 = redis::cmd("LPUSH")
            .arg("cmds_queue")
            .arg(cmd.to_string())
            .query(&mut conn)
            .expect("LPUSH");
        loop {
            match tokio::time::timeout(Duration::from_secs(30), got_rx.recv()).await {
                Ok(Some((i, at))) if i as u64 == nid => {
                    lat.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                    break;
                }
                Ok(Some(_)) => continue,
                _ => panic!("agent 1:{nid} was not woken within 30 s"),
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "wake-up of a parked agent (LPUSH to the poll's answer), {} samples: p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        pct(0.5),
        pct(0.99)
    );
    std::process::exit(0);
}
