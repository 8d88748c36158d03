//! Redis stays bounded whatever an agent posts (issue 10, items 6 and 8): a runaway log
//! message is cut to `--log-max-message` and log streams expire; an agent's latest stats hold
//! at most `--stats-max-metrics` names and expire; a large stats post is written in chunks and
//! appended once; a burst of scrapes reads every agent once; a target of a fanout job cannot
//! push the other targets' final results out of `cmds_queue_<id>`. (Item 9: max_wait.rs.)
//!
//! Driven over real HTTP with real tokens, like bad_input.rs: no agent process is needed; the
//! [`Fixture`] serves max_wait.rs too.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::{command, Controller, ControllerOpts, Redis, RedisClient};

pub const T: Duration = Duration::from_secs(20);

pub struct Fixture {
    _redis: Redis,
    controller: Controller,
    pub client: RedisClient,
    http: Client,
    tokens: Vec<((u64, u64), String)>,
}

impl Fixture {
    /// Redis, a controller with `extra` flags, and tokens for `agents`.
    pub fn start(extra: &[&str], agents: &[(u64, u64)]) -> Fixture {
        let redis = Redis::start();
        let opts = ControllerOpts {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let controller = Controller::start(&redis, opts);
        let tokens = agents
            .iter()
            .map(|&(g, n)| ((g, n), redis.token_add(g, n)))
            .collect();
        let client = redis.client();
        let http = controller.http();
        Fixture {
            _redis: redis,
            controller,
            client,
            http,
            tokens,
        }
    }

    pub fn token(&self, agent: (u64, u64)) -> &str {
        let (_, token) = self
            .tokens
            .iter()
            .find(|(a, _)| *a == agent)
            .expect("token");
        token
    }

    pub fn post(&self, agent: (u64, u64), what: &str, body: &Value) -> (StatusCode, Value) {
        let (g, n) = agent;
        let url = format!("{}/v1/agents/{g}/{n}/{what}", self.controller.url());
        let resp = self
            .http
            .post(url)
            .bearer_auth(self.token(agent))
            .json(body)
            .send()
            .expect("post");
        let status = resp.status();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// A poll that does not park: `max` commands at most.
    pub fn poll(&self, agent: (u64, u64), max: usize) -> Vec<Value> {
        let (g, n) = agent;
        let url = format!("{}/v1/agents/{g}/{n}/cmd", self.controller.url());
        let resp = self
            .http
            .get(format!("{url}?wait=0&max={max}"))
            .bearer_auth(self.token(agent))
            .send()
            .expect("poll");
        match resp.status() {
            StatusCode::NO_CONTENT => vec![],
            StatusCode::OK if max == 1 => vec![resp.json().expect("a command")],
            StatusCode::OK => resp.json().expect("commands"),
            other => panic!("poll answered {other}"),
        }
    }

    pub fn get(&self, path: &str) -> String {
        let resp = self
            .http
            .get(format!("{}{path}", self.controller.url()))
            .send()
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.text().expect("body")
    }

    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.client.query(cmd)
    }

    pub fn ttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("TTL").arg(key))
    }

    /// How often Redis ran `command` so far (`INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = self.query(redis::cmd("INFO").arg("commandstats"));
        calls_in(&info, command)
    }
}

fn calls_in(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

fn log_message(id: u64, level: u8, data: &str) -> Value {
    json!({"id": id, "jobid": "j", "domain": "bounds", "name": "cut", "epoch": 1,
        "level": level, "data": data})
}

/// Issue 10 item 6a: one 1.2 MB line must not become a 1.2 MB stream entry, nor a stream that
/// never goes away.
#[test]
fn a_runaway_log_message_is_cut_and_log_streams_expire() {
    let f = Fixture::start(
        &["--log-max-message", "1024", "--log-ttl", "600"],
        &[(1, 1)],
    );
    let long = "é".repeat(600_000);
    let body = json!([[log_message(1, 9, &long), log_message(2, 3, "short")]]);
    let (status, answer) = f.post((1, 1), "logs", &body);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["stored"], &answer["cut"]),
        (&json!(2), &json!(1)),
        "{answer}"
    );
    let stream = f.client.stream("log.bounds.cut");
    let data: Vec<&str> = stream.iter().map(|m| m["data"].as_str()).collect();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1], "short");
    let cut = data[0];
    assert!(cut.len() <= 1024, "{} bytes", cut.len());
    let kept = cut.find('…').expect("the cut is marked");
    assert!(cut[..kept].chars().all(|c| c == 'é'));
    let left_out = long.len() - kept;
    assert_eq!(&cut[kept..], format!("… [cut: {left_out} bytes]"));
    let alerts = f.client.stream("alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["data"], cut);
    for key in [
        "log.bounds.cut",
        "{log.bounds.cut}:seq",
        "alerts",
        "{alerts}:seq",
    ] {
        let ttl = f.ttl(key);
        assert!((1..=600).contains(&ttl), "{key}: ttl {ttl}");
    }
}

fn gauge(key: &str, value: f64) -> Value {
    json!({"key": key, "type": "gauge", "value": value})
}

fn stats_batch(epoch: u64, metrics: Vec<Value>) -> Value {
    json!({"gid": 1, "nid": 1, "epoch": epoch, "interval": 10.0, "metrics": metrics})
}

/// Issue 10 item 6b: `stats:{g:n}:latest` grew by one field per metric name an agent invented.
#[test]
fn an_agents_latest_stats_hold_at_most_the_cap_of_names_and_expire() {
    let f = Fixture::start(
        &["--stats-max-metrics", "10", "--stats-ttl", "600"],
        &[(1, 1)],
    );
    let now = schemas::now_ms();
    let first: Vec<Value> = (0..15).map(|i| gauge(&format!("m{i:02}"), 1.0)).collect();
    let (status, answer) = f.post((1, 1), "stats", &json!([stats_batch(now, first)]));
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["recorded"], &answer["dropped_metrics"]),
        (&json!(1), &json!(5)),
        "{answer}"
    );
    let held: u64 = f.query(redis::cmd("HLEN").arg("stats:{1:1}:latest"));
    assert_eq!(held, 10);

    // A name already held is still updated; new ones are not stored.
    let names = f.query::<Vec<String>>(redis::cmd("HKEYS").arg("stats:{1:1}:latest"));
    let mut second = vec![gauge(&names[0], 99.0)];
    second.extend((0..3).map(|i| gauge(&format!("new{i}"), 1.0)));
    let (_, answer) = f.post((1, 1), "stats", &json!(stats_batch(now + 1, second)));
    assert_eq!(answer["dropped_metrics"], 3, "{answer}");
    let updated = f
        .client
        .hget_json("stats:{1:1}:latest", &names[0])
        .expect("held");
    assert_eq!(updated["value"], 99.0);
    let held: u64 = f.query(redis::cmd("HLEN").arg("stats:{1:1}:latest"));
    assert_eq!(held, 10);
    let metrics = f.get("/metrics");
    assert!(
        metrics.contains("\njsacc_stats_metrics_dropped_total 8\n"),
        "{metrics}"
    );
    for key in ["stats:{1:1}", "stats:{1:1}:latest", "stats:{1:1}:seen"] {
        let ttl = f.ttl(key);
        assert!((1..=600).contains(&ttl), "{key}: ttl {ttl}");
    }
}

/// The latest-values part of `record_stats.lua` with `pairs` (key, values JSON): what a post
/// that stopped after its first chunk has written.
fn write_latest_chunk(f: &Fixture, pairs: &[(String, String)]) {
    let script = include_str!("../../controller/src/lua/record_stats.lua");
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(3);
    cmd.arg("stats:{1:1}")
        .arg("stats:{1:1}:latest")
        .arg("stats:{1:1}:seen");
    cmd.arg(10_000).arg(600).arg(0).arg(1000).arg(10_000);
    for (k, v) in pairs {
        cmd.arg(k).arg(v);
    }
    let _: Vec<i64> = f.query(&cmd);
}

/// Issue 10 item 6c: one 14 MB stats post blocked Redis in one script; now no script call
/// writes more than 500 metrics, and a batch is still appended once, also after a post that
/// stopped between two calls.
#[test]
fn a_large_stats_post_is_written_in_chunks_and_appended_once() {
    let f = Fixture::start(&[], &[(1, 1)]);
    let metrics = |from: usize, n: usize| -> Vec<Value> {
        (from..from + n)
            .map(|i| gauge(&format!("big.m{i}"), i as f64))
            .collect()
    };
    let now = schemas::now_ms();
    let big = stats_batch(now, metrics(0, 3000));
    let before = f.calls("evalsha") + f.calls("eval");
    let (status, answer) = f.post((1, 1), "stats", &json!([big]));
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["recorded"], 1, "{answer}");
    let calls = f.calls("evalsha") + f.calls("eval") - before;
    assert!(calls >= 6, "3000 metrics written by {calls} script call(s)");
    let held: u64 = f.query(redis::cmd("HLEN").arg("stats:{1:1}:latest"));
    assert_eq!(held, 3000);

    // A post of a second batch that stopped after its first chunk, then the agent's retry.
    let second = stats_batch(now + 1, metrics(3000, 1200));
    let first_chunk: Vec<(String, String)> = second["metrics"].as_array().expect("metrics")[..500]
        .iter()
        .map(|m| {
            let values = json!({"type": "gauge", "value": m["value"], "epoch": now + 1,
                "interval": 10.0});
            (
                m["key"].as_str().expect("key").to_owned(),
                values.to_string(),
            )
        })
        .collect();
    write_latest_chunk(&f, &first_chunk);
    let (_, answer) = f.post((1, 1), "stats", &json!([second]));
    assert_eq!(
        (&answer["recorded"], &answer["duplicates"]),
        (&json!(1), &json!(0)),
        "{answer}"
    );
    let (_, again) = f.post((1, 1), "stats", &json!([second]));
    assert_eq!(
        (&again["recorded"], &again["duplicates"]),
        (&json!(0), &json!(1)),
        "{again}"
    );
    assert_eq!(f.client.stream("stats:{1:1}").len(), 2, "each batch once");
    let held: u64 = f.query(redis::cmd("HLEN").arg("stats:{1:1}:latest"));
    assert_eq!(held, 4200);
    let last = f
        .client
        .hget_json("stats:{1:1}:latest", "big.m4199")
        .expect("written");
    assert_eq!(last["value"], 4199.0);
}

/// Issue 10 item 6d: `/metrics/agents` and the queue depths of `/metrics` cost Redis calls per
/// agent on every scrape.
#[test]
fn a_burst_of_scrapes_reads_each_agent_once() {
    const AGENTS: u64 = 5;
    const SCRAPES: u64 = 8;
    let f = Fixture::start(&[], &[]);
    let now = schemas::now_ms();
    for n in 1..=AGENTS {
        let _: i64 = f.query(
            redis::cmd("ZADD")
                .arg("agents")
                .arg(now)
                .arg(format!("1:{n}")),
        );
        let values = json!({"type": "gauge", "epoch": now, "interval": 10.0, "value": n});
        let _: i64 = f.query(
            redis::cmd("HSET")
                .arg(format!("stats:{{1:{n}}}:latest"))
                .arg("bounds.g")
                .arg(values.to_string()),
        );
    }
    let (hgetall, llen) = (f.calls("hgetall"), f.calls("llen"));
    let fx = &f;
    let texts: Vec<String> = std::thread::scope(|s| {
        let scrapes: Vec<_> = (0..SCRAPES)
            .flat_map(|_| ["/metrics/agents", "/metrics"])
            .map(|path| s.spawn(move || fx.get(path)))
            .collect();
        scrapes
            .into_iter()
            .map(|h| h.join().expect("scrape"))
            .collect()
    });
    for text in texts.iter().step_by(2) {
        assert!(
            text.contains("jsagent_bounds_g{gid=\"1\",nid=\"3\"} 3\n"),
            "{text}"
        );
    }
    // Uncached: one HGETALL per agent and scrape, two LLEN per agent and scrape (plus the two
    // LLEN of every /metrics). Cached for 2 s: once per burst (twice if it straddles 2 s).
    let hgetall = f.calls("hgetall") - hgetall;
    let llen = f.calls("llen") - llen;
    assert!(
        hgetall <= 2 * AGENTS,
        "{hgetall} HGETALL for {SCRAPES} scrapes"
    );
    assert!(
        llen <= 2 * SCRAPES + 2 * 2 * AGENTS,
        "{llen} LLEN for {SCRAPES} scrapes"
    );
}

/// A job record as the router writes it, for `cmd` sent to `targets`.
fn write_job(f: &Fixture, cmd: &Value, targets: &[&str]) {
    let id = cmd["id"].as_str().expect("id");
    let _: i64 = f.query(
        redis::cmd("HSET")
            .arg(format!("job:{id}"))
            .arg("cmd")
            .arg(cmd.to_string())
            .arg("state")
            .arg("RUNNING")
            .arg("created")
            .arg(schemas::now_ms())
            .arg("targets")
            .arg(json!(targets).to_string()),
    );
}

fn job_result(id: &str, nid: u64, run: u64, is_final: bool) -> Value {
    let mut r = json!({"id": id, "gid": 1, "nid": nid, "cmd": "execute", "args": {},
        "data": format!("from 1:{nid}"), "level": 0, "state": "OK", "time": 1,
        "starttime": 1, "exit_code": 0, "streams": ["", ""], "critical": "", "run": run});
    if !is_final {
        r["final"] = json!(false);
    }
    r
}

/// 1:2 posts its final result, then 1:1 posts 150 run results; returns 1:1's answer.
fn flood(f: &Fixture, id: &str) -> Value {
    let (status, answer) = f.post((1, 2), "result", &json!([job_result(id, 2, 0, true)]));
    assert_eq!((status, &answer["recorded"]), (StatusCode::OK, &json!(1)));
    let runs: Vec<Value> = (1..=150).map(|run| job_result(id, 1, run, false)).collect();
    let (status, answer) = f.post((1, 1), "result", &json!(runs));
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

/// Issue 10 item 8: `cmds_queue_<id>` keeps the last 100 results, and run results were taken
/// for any job, so one target of a fanout job could push the others' final results out.
#[test]
fn a_target_of_a_fanout_job_cannot_push_the_others_final_results_out() {
    let f = Fixture::start(&[], &[(1, 1), (1, 2)]);
    let fanout = |args: Value| {
        let mut cmd = command(1, 0, "execute", args);
        cmd.as_object_mut().expect("object").remove("nid");
        cmd["role"] = json!("web");
        cmd["fanout"] = json!(true);
        cmd
    };

    // A job that runs once takes no run results at all.
    let once = fanout(json!({"cmd": "true"}));
    let id = once["id"].as_str().expect("id");
    write_job(&f, &once, &["1:1", "1:2"]);
    let answer = flood(&f, id);
    assert_eq!(answer["recorded"], 0, "{answer}");
    let rejected = answer["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 150);
    assert!(
        rejected.iter().all(|r| r["error"] == "not_recurring"),
        "{rejected:?}"
    );
    let results = f.client.results(id);
    assert_eq!(results.len(), 1);
    assert_eq!(
        (&results[0]["nid"], results[0].get("final")),
        (&json!(2), None)
    );
    assert_eq!(f.client.job_field(id, "run:1:1"), None);

    // A recurring job takes them, but its list sheds run results only.
    let every = fanout(json!({"cmd": "true", "recurring_period": 60}));
    let id = every["id"].as_str().expect("id");
    write_job(&f, &every, &["1:1", "1:2"]);
    let answer = flood(&f, id);
    assert_eq!(answer["recorded"], 150, "{answer}");
    let results = f.client.results(id);
    assert_eq!(results.len(), 100);
    assert_eq!(
        (&results[0]["nid"], results[0].get("final")),
        (&json!(2), None)
    );
    let runs: Vec<u64> = results[1..]
        .iter()
        .map(|r| r["run"].as_u64().expect("run"))
        .collect();
    assert_eq!(
        runs,
        (52..=150).collect::<Vec<u64>>(),
        "the newest runs are kept"
    );
    // 1:1's own final result joins it; neither final result is ever trimmed.
    let (_, answer) = f.post((1, 1), "result", &json!([job_result(id, 1, 151, true)]));
    assert_eq!(answer["recorded"], 1, "{answer}");
    let finals: Vec<u64> = f
        .client
        .results(id)
        .iter()
        .filter(|r| r.get("final").is_none())
        .map(|r| r["nid"].as_u64().expect("nid"))
        .collect();
    assert_eq!(finals, [2, 1]);
    assert_eq!(f.client.job_field(id, "state").as_deref(), Some("OK"));
}
