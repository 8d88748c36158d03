//! Every kind of bad input ends in a clear error, and nothing is lost (issue: "Bad input").
//! These drive the controller over real HTTP with real tokens; no agent process is needed.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::{command, wait_for, Controller, ControllerOpts, Redis, RedisClient};

const T: Duration = Duration::from_secs(10);

struct Fixture {
    redis: Redis,
    controller: Controller,
    client: RedisClient,
    http: Client,
    token: String,
}

impl Fixture {
    fn start() -> Fixture {
        let redis = Redis::start();
        let opts = ControllerOpts {
            extra: vec!["--max-body".into(), "4096".into()],
            ..Default::default()
        };
        let controller = Controller::start(&redis, opts);
        let token = redis.token_add(1, 1);
        let client = redis.client();
        let http = controller.http();
        Fixture {
            redis,
            controller,
            client,
            http,
            token,
        }
    }

    fn url(&self, gid: u64, nid: u64, what: &str) -> String {
        format!("{}/v1/agents/{gid}/{nid}/{what}", self.controller.url())
    }

    fn post(
        &self,
        gid: u64,
        nid: u64,
        what: &str,
        token: Option<&str>,
        body: String,
    ) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(gid, nid, what)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("request");
        let status = resp.status();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn poll(&self, token: &str, query: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}?{query}", self.url(1, 1, "cmd")))
            .bearer_auth(token)
            .send()
            .expect("poll");
        let status = resp.status();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// The only result of a command that cannot run.
    fn error_of(&self, cmd: &str) -> Value {
        self.client.push_raw(cmd);
        let id = serde_json::from_str::<Value>(cmd).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let r = self
            .client
            .result(&id, T)
            .unwrap_or_else(|| panic!("no ERROR result for {cmd}"));
        assert_eq!(r["state"], "ERROR", "{r}");
        r
    }

    fn dead_reason(&self, raw: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let found = self
                .client
                .dead_letters()
                .into_iter()
                .find(|d| d["raw"] == raw);
            if let Some(d) = found {
                return d["reason"].as_str().unwrap_or("").to_owned();
            }
            let log = std::fs::read_to_string(self.controller.dir.path().join("jsacc.1.log"))
                .unwrap_or_default();
            assert!(
                start.elapsed() < T,
                "no dead letter of {raw:?}; controller log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn bad_commands_are_dead_lettered_with_a_clear_error() {
    let f = Fixture::start();
    let cases: &[(&str, &str)] = &[
        (r#"{"id":"no-cmd","gid":1,"nid":1}"#, "missing field `cmd`"),
        (r#"{"id":"no-target","gid":1,"cmd":"ping"}"#, "no target"),
        (
            r#"{"id":"no-gid","nid":1,"cmd":"ping"}"#,
            "missing field `gid`",
        ),
        (
            r#"{"id":"unknown-cmd","gid":1,"nid":1,"cmd":"fly"}"#,
            "unknown command `fly`",
        ),
        (
            r#"{"id":"unknown-agent","gid":1,"nid":99,"cmd":"ping"}"#,
            "unknown agent 1:99",
        ),
        (
            r#"{"id":"bad-args","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"/bin/true","max_time":"ten"}}"#,
            "invalid type",
        ),
        (
            r#"{"id":"bad-args2","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"/bin/true","args":"-l"}}"#,
            "expected a sequence",
        ),
        (
            r#"{"id":"neg-period","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","recurring_period":-1}}"#,
            "recurring_period",
        ),
        (
            r#"{"id":"typo","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","max_tme":1}}"#,
            "unknown field `max_tme`",
        ),
        // Process-manager args (issue 3): negative periods, wrong types, unknown queue options.
        (
            r#"{"id":"neg-restart","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","max_restart":-3}}"#,
            "max_restart",
        ),
        (
            r#"{"id":"float-period","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","recurring_period":"often"}}"#,
            "recurring_period",
        ),
        (
            r#"{"id":"max-time","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","max_time":-2}}"#,
            "`max_time` must be -1",
        ),
        (
            r#"{"id":"queue-opts","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","queue":{"name":"q","size":3}}}"#,
            "queue",
        ),
        (
            r#"{"id":"queue-empty","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","queue":""}}"#,
            "`queue` is empty",
        ),
        (
            r#"{"id":"stats-zero","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","stats_interval":0}}"#,
            "`stats_interval` must be at least 1 second",
        ),
        // Durations that would overflow a clock (issue 10): refused, naming the field.
        (
            r#"{"id":"huge-period","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","recurring_period":18446744073709551615}}"#,
            "`recurring_period` 18446744073709551615 is too long",
        ),
        (
            r#"{"id":"huge-stats","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"x","stats_interval":9223372036854775807}}"#,
            "`stats_interval` 9223372036854775807 is too long",
        ),
        (
            r#"{"id":"huge-wait","gid":1,"nid":1,"cmd":"ping","args":{"max_wait":18446744073709551615}}"#,
            "max_wait",
        ),
        (
            r#"{"id":"kill-no-id","gid":1,"nid":1,"cmd":"kill","args":{}}"#,
            "missing field `id`",
        ),
        (
            r#"{"id":"killall-args","gid":1,"nid":1,"cmd":"killall","args":{"force":true}}"#,
            "unknown field `force`",
        ),
        (
            r#"{"id":"both","gid":1,"nid":1,"role":"web","cmd":"ping"}"#,
            "not both",
        ),
        (
            r#"{"id":"gid-type","gid":"one","nid":1,"cmd":"ping"}"#,
            "`gid` has the wrong type",
        ),
    ];
    for (raw, why) in cases {
        let r = f.error_of(raw);
        let data = r["data"].as_str().expect("data is the reason");
        assert!(data.contains(why), "{raw}: expected `{why}` in `{data}`");
        assert!(f.dead_reason(raw).contains(why));
        let id = serde_json::from_str::<Value>(raw).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_eq!(
            f.client.job_field(&id, "state").as_deref(),
            Some("ERROR"),
            "{raw}"
        );
    }
    // Garbage without a readable id: dead letter only.
    for raw in [
        "not json at all",
        "[1,2]",
        r#"{"gid":1,"nid":1,"cmd":"ping"}"#,
        "\u{0}\u{1}binary",
    ] {
        f.client.push_raw(raw);
        let reason = f.dead_reason(raw);
        assert!(!reason.is_empty(), "{raw}");
    }
    // Nothing was lost or left behind, and a good command still goes through.
    assert_eq!(f.client.llen("cmds_queue"), 0);
    let ok = command(1, 1, "ping", json!({}));
    f.client.push(&ok);
    let (status, body) = f.poll(&f.token, "wait=5");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], ok["id"]);
}

#[test]
fn a_duplicate_job_id_is_refused_and_the_first_job_untouched() {
    let f = Fixture::start();
    let first = json!({"id": "dup", "gid": 1, "nid": 1, "cmd": "ping"});
    f.client.push(&first);
    wait_for("first job recorded", T, || {
        f.client.job_field("dup", "state")
    });
    let second =
        json!({"id": "dup", "gid": 1, "nid": 1, "cmd": "execute", "args": {"cmd": "/bin/rm"}});
    f.client.push(&second);
    let r = f
        .client
        .result("dup", T)
        .expect("an answer to the duplicate");
    assert_eq!(
        (r["state"].as_str(), r["data"].as_str()),
        (Some("ERROR"), Some("duplicate id"))
    );
    assert_eq!(
        f.client.job_field("dup", "cmd").as_deref(),
        Some(first.to_string().as_str())
    );
    assert_eq!(
        f.client.job_field("dup", "state").as_deref(),
        Some("QUEUED")
    );
    // The agent gets the first command only.
    let (status, body) = f.poll(&f.token, "wait=2&max=10");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([first]));
}

#[test]
fn tokens_are_checked_on_every_agent_endpoint() {
    let f = Fixture::start();
    let other = f.redis.token_add(1, 2);
    let hello = json!({"hostname": "h"}).to_string();
    for (what, token, want) in [
        ("hello", None, StatusCode::UNAUTHORIZED),
        ("hello", Some("jsa_wrong"), StatusCode::UNAUTHORIZED),
        ("hello", Some(other.as_str()), StatusCode::FORBIDDEN),
        ("result", None, StatusCode::UNAUTHORIZED),
        ("result", Some(other.as_str()), StatusCode::FORBIDDEN),
        ("hello", Some(f.token.as_str()), StatusCode::OK),
    ] {
        let (status, body) = f.post(1, 1, what, token, hello.clone());
        let want_body = status == StatusCode::OK || body["error"].is_string();
        assert!(
            status == want && want_body,
            "{what} with {token:?}: {status} {body}"
        );
    }
    let resp = f.http.get(f.url(1, 1, "cmd")).send().expect("poll");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = f
        .http
        .get(format!("{}?wait=0", f.url(1, 1, "cmd")))
        .bearer_auth(&other)
        .send()
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = f
        .http
        .get(f.url(1, 1, "cmd"))
        .header("Authorization", "Basic abc")
        .send()
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A revoked token stops working (within the token cache's few seconds).
    let out = std::process::Command::new(tests::bin_dir().join("jsacc"))
        .args([
            "token",
            "revoke",
            "--gid",
            "1",
            "--nid",
            "2",
            "-r",
            &f.redis.addr(),
        ])
        .output()
        .expect("revoke runs");
    assert!(out.status.success());
    wait_for("revoked token refused", Duration::from_secs(15), || {
        let (status, _) = f.post(1, 2, "hello", Some(&other), hello.clone());
        (status == StatusCode::UNAUTHORIZED).then_some(())
    });
}

#[test]
fn bad_results_are_refused_and_duplicates_are_no_ops() {
    let f = Fixture::start();
    let cmd = command(1, 1, "ping", json!({}));
    let id = cmd["id"].as_str().expect("id").to_owned();
    f.client.push(&cmd);
    let (status, _) = f.poll(&f.token, "wait=5");
    assert_eq!(status, StatusCode::OK);
    let result = json!({"id": id, "gid": 1, "nid": 1, "cmd": "ping", "args": {}, "data": "pong", "level": 0,
        "state": "OK", "time": 0, "starttime": 1, "exit_code": null, "streams": ["", ""], "critical": ""});

    let (status, body) = f.post(1, 1, "result", Some(&f.token), result.to_string());
    assert_eq!(
        (status, body["recorded"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    let (status, body) = f.post(
        1,
        1,
        "result",
        Some(&f.token),
        json!([result, result]).to_string(),
    );
    assert_eq!(
        (status, body["duplicates"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{body}"
    );
    assert_eq!(f.client.results(&id).len(), 1, "a repeated post is a no-op");
    assert_eq!(f.client.job_field(&id, "state").as_deref(), Some("OK"));
    assert_eq!(
        f.client.llen("agent:{1:1}:delivered"),
        0,
        "the result settles the delivery"
    );

    let mut unknown = result.clone();
    unknown["id"] = json!("never-routed");
    let (status, body) = f.post(1, 1, "result", Some(&f.token), unknown.to_string());
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_job"))
    );
    let (status, body) = f.post(1, 1, "result", Some(&f.token), json!([unknown]).to_string());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rejected"][0]["error"], "unknown_job");

    let mut elsewhere = result.clone();
    elsewhere["nid"] = json!(2);
    let (status, body) = f.post(1, 1, "result", Some(&f.token), elsewhere.to_string());
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("mismatched_agent"))
    );

    for garbage in [
        "not json",
        "42",
        r#"{"id": 5}"#,
        r#"{"id":"x","gid":1,"nid":1,"cmd":"ping","state":"FINE"}"#,
    ] {
        let (status, body) = f.post(1, 1, "result", Some(&f.token), garbage.into());
        assert_eq!(status, StatusCode::BAD_REQUEST, "{garbage}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{garbage}: {body}"
        );
    }
    // A run's result without its run number cannot be told from a duplicate: refused.
    let mut unnumbered = result.clone();
    unnumbered["final"] = json!(false);
    let (status, body) = f.post(1, 1, "result", Some(&f.token), unnumbered.to_string());
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("`run`")),
        "{body}"
    );
    let (status, body) = f.poll(&f.token, "wait=abc");
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let resp = f
        .http
        .get(format!("{}/v2/nothing", f.controller.url()))
        .send()
        .expect("get");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[test]
fn bodies_over_the_limit_are_refused_on_every_endpoint() {
    let f = Fixture::start();
    let big = format!("{{\"hostname\": \"{}\"}}", "x".repeat(8192));
    // A hello has its own limit (64 KiB), whatever --max-body says.
    let huge = format!("{{\"hostname\": \"{}\"}}", "x".repeat(70_000));
    for (what, body) in [("hello", &huge), ("result", &big), ("logs", &big)] {
        let (status, body) = f.post(1, 1, what, Some(&f.token), body.clone());
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")),
            "{what}"
        );
    }
    let resp = f
        .http
        .get(f.url(1, 1, "cmd"))
        .bearer_auth(&f.token)
        .body(big.clone())
        .send()
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = f
        .http
        .post(format!("{}/metrics", f.controller.url()))
        .body(big)
        .send()
        .expect("post");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The server is still fine.
    let resp = f
        .http
        .get(format!("{}/readyz", f.controller.url()))
        .send()
        .expect("readyz");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn a_command_over_max_command_is_answered_error_and_its_letter_is_capped() {
    let redis = Redis::start();
    let opts = ControllerOpts {
        extra: vec!["--max-command".into(), "100000".into()],
        ..Default::default()
    };
    let _controller = Controller::start(&redis, opts);
    redis.token_add(1, 1);
    let client = redis.client();
    let mut cmd = command(1, 1, "ping", json!({}));
    cmd["data"] = json!("x".repeat(300_000));
    let id = cmd["id"].as_str().expect("id").to_owned();
    client.push(&cmd);
    let r = client.result(&id, T).expect("an ERROR answer");
    assert_eq!(r["state"], "ERROR", "{r}");
    assert!(
        r["data"]
            .as_str()
            .is_some_and(|d| d.contains("over the limit of 100000 bytes (--max-command)")),
        "{r}"
    );
    let letter = wait_for("the dead letter", T, || client.dead_letters().pop());
    assert!(
        letter["truncated"].as_u64().is_some_and(|n| n > 300_000),
        "{letter}"
    );
    let kept = letter["raw"].as_str().expect("raw").len();
    assert!(
        kept <= 64 << 10,
        "the letter keeps at most 64 KiB, not {kept}"
    );
    // Routing goes on (no agent runs here: the job is queued for 1:1).
    let next = command(1, 1, "ping", json!({}));
    client.push(&next);
    let id = next["id"].as_str().expect("id");
    wait_for("the next command routed", T, || {
        (client.job_field(id, "state").as_deref() == Some("QUEUED")).then_some(())
    });
}

#[test]
fn a_command_redis_keeps_refusing_is_dead_lettered_and_does_not_block_routing() {
    let redis = Redis::start();
    let opts = ControllerOpts {
        extra: vec!["--route-tries".into(), "3".into()],
        ..Default::default()
    };
    let controller = Controller::start(&redis, opts);
    redis.token_add(1, 1);
    let client = redis.client();
    // `job:<id>` already exists as a string: every write of the job record fails WRONGTYPE.
    let poison = command(1, 1, "ping", json!({}));
    let id = poison["id"].as_str().expect("id").to_owned();
    client.query::<()>(redis::cmd("SET").arg(format!("job:{id}")).arg("not a hash"));
    client.push(&poison);
    let r = client
        .result(&id, T)
        .expect("an ERROR answer after a few tries");
    assert_eq!(r["state"], "ERROR", "{r}");
    assert!(
        r["data"].as_str().is_some_and(|d| d.contains("WRONGTYPE")),
        "{r}"
    );
    let letter = wait_for("the dead letter", T, || client.dead_letters().pop());
    assert!(
        letter["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused this command's writes 3 times")),
        "{letter}"
    );
    // Commands pushed after it are routed, and the instance says it is ready.
    let mut ids = Vec::new();
    for _ in 0..20 {
        let cmd = command(1, 1, "ping", json!({}));
        ids.push(cmd["id"].as_str().expect("id").to_owned());
        client.push(&cmd);
    }
    for id in &ids {
        wait_for("a command behind it routed", T, || {
            (client.job_field(id, "state").as_deref() == Some("QUEUED")).then_some(())
        });
    }
    let resp = controller
        .http()
        .get(format!("{}/readyz", controller.url()))
        .send()
        .expect("readyz");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn roles_an_agent_claims_beyond_its_tokens_are_ignored_with_a_warning() {
    let f = Fixture::start();
    // 1:1's token grants no role: its claim is ignored.
    let hello = json!({"hostname": "h", "os": "linux", "arch": "x86_64", "version": "t",
                       "roles": ["db"], "started": 1});
    let (status, body) = f.post(1, 1, "hello", Some(&f.token), hello.to_string());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["roles"], json!([]), "{body}");
    assert!(
        body["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("roles db are not granted")),
        "{body}"
    );
    assert_eq!(f.client.hget_json("agent:{1:1}", "roles"), Some(json!([])));
    // A role-routed command does not reach it, though it polls.
    let _poll = f
        .http
        .get(format!("{}?wait=1", f.url(1, 1, "cmd")))
        .bearer_auth(&f.token)
        .send();
    let mut cmd = command(1, 0, "ping", json!({}));
    cmd.as_object_mut().expect("object").remove("nid");
    cmd["role"] = json!("db");
    let r = f.client.run(&cmd, T);
    assert_eq!(r["state"], "ERROR", "{r}");

    // A token that grants the role: the same claim is kept.
    let token = tests::topology::token_add_with(&f.redis.jsacc_args(), 1, 2, &["db"]);
    let (status, body) = f.post(1, 2, "hello", Some(&token), hello.to_string());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["roles"], json!(["db"]), "{body}");
    assert_eq!(body["warnings"], json!([]), "{body}");
}

#[test]
fn a_poll_parked_when_its_token_is_replaced_receives_nothing() {
    let f = Fixture::start();
    let token = f.redis.token_add(1, 2);
    let hello = json!({"hostname": "h"}).to_string();
    assert_eq!(
        f.post(1, 2, "hello", Some(&token), hello.clone()).0,
        StatusCode::OK
    );
    // Park a long poll, then replace the token while it waits (revoked, the agent would have
    // no token and its commands would not be routed at all).
    let url = format!("{}?wait=30", f.url(1, 2, "cmd"));
    let http = f.http.clone();
    let poll_token = token.clone();
    let parked = std::thread::spawn(move || {
        let resp = http.get(url).bearer_auth(poll_token).send().expect("poll");
        let status = resp.status();
        (status, resp.text().unwrap_or_default())
    });
    wait_for("the poll parked", T, || {
        let metrics = f
            .http
            .get(format!("{}/metrics", f.controller.url()))
            .send()
            .ok()?
            .text()
            .ok()?;
        metrics
            .lines()
            .any(|l| l == "jsacc_polls_parked 1")
            .then_some(())
    });
    let new_token = f.redis.token_add(1, 2);
    // A command arrives once the controller's look at `auth:version` (at most 0.1 s old) is
    // surely older than the replacement; its token snapshot (trusted for up to 5 s) is not.
    std::thread::sleep(Duration::from_millis(500));
    let cmd = command(1, 2, "ping", json!({}));
    f.client.push(&cmd);
    let (status, body) = parked.join().expect("poll thread");
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the parked poll got: {body}"
    );
    // The command is still waiting for the agent, and its new token gets it.
    let id = cmd["id"].as_str().expect("id");
    wait_for("the command routed", T, || {
        (f.client.job_field(id, "state").as_deref() == Some("QUEUED")).then_some(())
    });
    let resp = f
        .http
        .get(format!("{}?wait=5", f.url(1, 2, "cmd")))
        .bearer_auth(&new_token)
        .send()
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().unwrap_or_default().contains(id));
}
