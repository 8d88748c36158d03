//! Hostile and malformed input (issue 10, hardening): a corpus of requests, connections,
//! datagrams and commands no honest agent or client sends, thrown at running controllers and
//! agents while legitimate jobs keep flowing through Redis. Each input must get a clear error
//! (a status and a JSON `{"error", "message"}` body; or, where only closing makes sense, the
//! connection closed), both kinds of process must stay up, and every legitimate job sent
//! meanwhile must get its final result.
//!
//! The cases are one table of named entries ([`Case`]), run in order; a failing case does not
//! stop the others, and the end prints each failure with what was seen. The cases live by what
//! they attack: [`http`] (the HTTP layer over raw TCP), [`api`] (bodies, numbers, other agents,
//! bad tokens), [`enroll`] (`POST /v1/enroll`, read without a token), [`listener`] (TLS
//! handshakes, connection flood, metrics access), [`inputs`] (commands in `cmds_queue`, statsd
//! datagrams, job output).
//!
//! Deployment: one Redis; `main` (plain HTTP, agents 1:1 and 1:2), `tls` (HTTPS, with
//! `--metrics-token-file`) and `capped` (plain HTTP, `--max-connections 64`, agent 1:3). Cases
//! that need a valid token use agent 9:1, which has a token but no process, so no hostile poll
//! or ack can touch a live agent's queue.

mod api;
mod enroll;
mod http;
mod inputs;
mod listener;

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::raw_http::{Outcome, RawResponse};
use tests::RedisClient;
use tests::{command, execute, gone, wait_for, Agent, Controller, ControllerOpts, Redis};

/// What a case saw: `Ok` with a short note, or `Err` with what was wrong.
type Seen = Result<String, String>;

/// One named hostile input (or a small family of alike ones) and its check.
struct Case {
    name: String,
    run: Box<dyn Fn(&World) -> Seen>,
}

fn case(name: impl Into<String>, run: impl Fn(&World) -> Seen + 'static) -> Case {
    Case {
        name: name.into(),
        run: Box::new(run),
    }
}

/// The processes under attack and what the cases need to reach them.
struct World {
    redis: Redis,
    main: Controller,
    tls: Controller,
    capped: Controller,
    agents: Vec<Agent>,
    client: RedisClient,
    /// Token of agent 9:1 (no process runs as it).
    token: String,
    /// Token of agent 9:2 (no process either): a valid token of another agent.
    other_token: String,
    metrics_token: String,
    /// The statsd UDP listener of agent 1:1.
    statsd: SocketAddr,
    /// Every process that must stay up, by name.
    pids: Vec<(String, u32)>,
    _dir: tempfile::TempDir,
}

/// Flags of every controller: small limits, so the cases stay cheap.
fn limits(header_timeout: u64) -> Vec<String> {
    [
        "--header-timeout",
        &header_timeout.to_string(),
        "--body-timeout",
        "2",
        "--max-command",
        "1048576",
        "--route-tries",
        "3",
        "--max-stats-body",
        "65536",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl World {
    fn start() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let redis = Redis::start();
        let plain = |extra: Vec<String>| ControllerOpts {
            insecure_http: true,
            extra,
        };
        let mut main = Controller::start(&redis, plain(limits(2)));
        let metrics_token = format!("metrics-{}", uuid::Uuid::new_v4());
        let token_file = dir.path().join("metrics-token");
        std::fs::write(&token_file, &metrics_token).expect("metrics token file");
        let mut tls_flags = limits(2);
        tls_flags.extend([
            "--metrics-token-file".into(),
            token_file.display().to_string(),
        ]);
        let mut tls = Controller::start(
            &redis,
            ControllerOpts {
                insecure_http: false,
                extra: tls_flags,
            },
        );
        // A long header timeout: a flood connection that is kept stays open while it is counted.
        let mut capped_flags = limits(60);
        capped_flags.extend(["--max-connections".into(), "64".into()]);
        let mut capped = Controller::start(&redis, plain(capped_flags));

        let statsd_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free udp port")
            .port();
        let config =
            format!("stats_flush_interval = 1\nstatsd_listen = \"127.0.0.1:{statsd_port}\"\n");
        let mut agents = vec![
            Agent::start_configured(&redis, &main, 1, 1, &[], &config),
            Agent::start(&redis, &main, 1, 2, &[]),
            Agent::start(&redis, &capped, 1, 3, &[]),
        ];
        let client = redis.client();
        for a in &agents {
            wait_for(
                &format!("agent {}:{} online", a.gid, a.nid),
                Duration::from_secs(30),
                || client.online(a.gid, a.nid).then_some(()),
            );
        }
        let mut pids = vec![
            ("jsacc main".to_owned(), main.proc().pid()),
            ("jsacc tls".to_owned(), tls.proc().pid()),
            ("jsacc capped".to_owned(), capped.proc().pid()),
        ];
        for a in &mut agents {
            pids.push((format!("jsagent {}:{}", a.gid, a.nid), a.proc().pid()));
        }
        World {
            token: redis.token_add(9, 1),
            other_token: redis.token_add(9, 2),
            redis,
            main,
            tls,
            capped,
            agents,
            client,
            metrics_token,
            statsd: SocketAddr::from(([127, 0, 0, 1], statsd_port)),
            pids,
            _dir: dir,
        }
    }

    fn addr(c: &Controller) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], c.port))
    }

    /// Every process still up, or which one is gone.
    fn alive(&self) -> Result<(), String> {
        match self.pids.iter().find(|(_, pid)| gone(*pid)) {
            Some((name, pid)) => Err(format!("{name} (pid {pid}) is gone")),
            None => Ok(()),
        }
    }

    /// Everything the processes logged, for a failure message.
    fn dump(&self) -> String {
        let mut out = String::new();
        for c in [&self.main, &self.tls, &self.capped] {
            out.push_str(&tail(&c.logs(), 80));
        }
        for a in &self.agents {
            out.push_str(&format!(
                "--- agent {}:{} ---\n{}",
                a.gid,
                a.nid,
                tail(&a.logs(), 40)
            ));
        }
        out
    }
}

/// The last `n` lines of a log.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n") + "\n"
}

/// An error answer with this status and code, and a message.
fn error(outcome: &Outcome, status: u16, code: &str) -> Seen {
    let Some(r) = outcome.response() else {
        return Err(format!(
            "want {status} {code}, got no answer: {}",
            outcome.summary()
        ));
    };
    error_response(r, status, code)
}

fn error_response(r: &RawResponse, status: u16, code: &str) -> Seen {
    let body = r.json().unwrap_or(Value::Null);
    let message = body["message"].as_str().unwrap_or("");
    if r.status != status || body["error"] != code || message.is_empty() {
        return Err(format!(
            "want {status} {{\"error\": {code:?}, \"message\": …}}, got {}",
            r.summary()
        ));
    }
    Ok(format!("{status} {code}: {message}"))
}

/// Refused by the HTTP layer itself (it answers these without a JSON body): one of `statuses`,
/// or the connection closed.
fn refused(outcome: &Outcome, statuses: &[u16]) -> Seen {
    match outcome {
        Outcome::Answered(r) if statuses.contains(&r.status) => {
            Ok(format!("answered {}", r.status))
        }
        Outcome::Closed { after, .. } => Ok(format!("closed after {after:.1?}")),
        other => Err(format!(
            "want one of {statuses:?} or a close, got {}",
            other.summary()
        )),
    }
}

/// Legitimate jobs pushed all along the run, to agents 1:1, 1:2 and 1:3 in turn.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Legit>>,
}

/// One legitimate job and what its result must show.
struct Legit {
    cmd: Value,
    /// Text its stdout must hold (`execute`), or `None` for a `ping`.
    marker: Option<String>,
}

impl Traffic {
    fn start(redis_url: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let client = RedisClient::new(&redis_url);
            let mut sent = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                for nid in 1..=3 {
                    let n = sent.len();
                    let legit = if n % 2 == 0 {
                        Legit {
                            cmd: command(1, nid, "ping", json!({})),
                            marker: None,
                        }
                    } else {
                        let marker = format!("legit-{n}");
                        Legit {
                            cmd: execute(1, nid, "/bin/echo", &[&marker]),
                            marker: Some(marker),
                        }
                    };
                    client.push(&legit.cmd);
                    sent.push(legit);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            sent
        });
        Traffic { stop, thread }
    }

    /// Stops pushing and waits for every job's result: how many, or which went wrong.
    fn finish(self, client: &RedisClient, limit: Duration) -> Result<usize, String> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.thread.join().expect("traffic thread");
        let deadline = Instant::now() + limit;
        let mut wrong = Vec::new();
        for legit in &sent {
            let id = legit.cmd["id"].as_str().expect("id");
            let left = deadline.saturating_duration_since(Instant::now());
            let problem = match client.result(id, left.max(Duration::from_millis(10))) {
                None => Some("no result".to_owned()),
                Some(r) if r["state"] != "OK" => {
                    Some(format!("state {}: {}", r["state"], r["data"]))
                }
                Some(r) => match &legit.marker {
                    None if r["data"] != "pong" => Some(format!("ping answered {}", r["data"])),
                    Some(m) if !r["streams"][0].as_str().unwrap_or("").contains(m.as_str()) => {
                        Some(format!("stdout {} lacks {m}", r["streams"][0]))
                    }
                    _ => None,
                },
            };
            if let Some(p) = problem {
                wrong.push(format!(
                    "{} to {}:{}: {p}",
                    legit.cmd["cmd"], legit.cmd["gid"], legit.cmd["nid"]
                ));
            }
        }
        if wrong.is_empty() {
            Ok(sent.len())
        } else {
            let shown: Vec<_> = wrong.iter().take(10).collect();
            Err(format!(
                "{} of {} legitimate jobs went wrong, e.g. {shown:#?}",
                wrong.len(),
                sent.len()
            ))
        }
    }
}

#[test]
fn hostile_inputs_get_clear_errors_and_legit_jobs_still_get_results() {
    let w = World::start();
    let traffic = Traffic::start(w.redis.url());
    let cases: Vec<Case> = [
        http::cases(),
        api::cases(),
        enroll::cases(),
        listener::cases(),
        inputs::cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut failures = Vec::new();
    for c in &cases {
        let start = Instant::now();
        let seen = catch_unwind(AssertUnwindSafe(|| (c.run)(&w)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
        let took = start.elapsed();
        match &seen {
            Ok(note) => eprintln!("ok   {} ({took:.1?}): {note}", c.name),
            Err(what) => {
                eprintln!("FAIL {} ({took:.1?}): {what}", c.name);
                failures.push(format!("{}: {what}", c.name));
            }
        }
        if let Err(dead) = w.alive() {
            panic!("after `{}`: {dead}\n{}", c.name, w.dump());
        }
    }
    let answered = traffic.finish(&w.client, Duration::from_secs(180));
    if let Ok(n) = &answered {
        eprintln!(
            "{} hostile inputs tried, {n} legitimate jobs all answered",
            cases.len()
        );
    }
    let mut problems = failures;
    if let Err(e) = answered {
        problems.push(e);
    }
    assert!(
        problems.is_empty(),
        "{} hostile inputs tried; {} problems:\n{}\n{}",
        cases.len(),
        problems.len(),
        problems.join("\n"),
        w.dump()
    );
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "?".into())
}
