//! The API of the `main` controller behind its tokens: bodies that are not JSON or of the
//! wrong shape, numbers no field can hold, bodies and paths of other agents, and a thousand bad
//! tokens (with the controller's memory before and after).

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use tests::raw_http::{connect, read_until_closed, request, send, Outcome};

use super::http::{addr, as_me, bearer, Rng};
use super::{case, error, Case, Seen, World};

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    bad_bodies(&mut cases);
    huge_numbers(&mut cases);
    other_agents(&mut cases);
    bad_tokens(&mut cases);
    cases
}

/// `n` nested arrays (or objects), deeper than any parser should follow.
fn deep(n: usize, open: &str, close: &str) -> Vec<u8> {
    format!("{}{}", open.repeat(n), close.repeat(n)).into_bytes()
}

const ENDPOINTS: [&str; 4] = ["hello", "result", "logs", "stats"];

fn bad_bodies(cases: &mut Vec<Case>) {
    let bad_json: [(&str, &[u8]); 9] = [
        ("empty", b""),
        ("a lone brace", b"{"),
        ("cut after a key", b"{\"hostname\":"),
        ("trailing brace", b"{\"a\":1}}"),
        ("a UTF-8 BOM", b"\xEF\xBB\xBF{}"),
        ("an unclosed array", b"[1,2,"),
        ("NaN", b"NaN"),
        ("single quotes", b"{'a':1}"),
        ("a trailing comma", b"{\"a\":1,}"),
    ];
    let wrong_type: Vec<(&str, Vec<u8>)> = vec![
        ("a string", b"\"string\"".to_vec()),
        ("a number", b"42".to_vec()),
        ("null", b"null".to_vec()),
        ("true", b"true".to_vec()),
        ("arrays 10000 deep", deep(10_000, "[", "]")),
        ("objects 10000 deep", deep(10_000, "{\"a\":", "}")),
    ];
    let invalid_utf8: [(&str, &[u8]); 2] = [
        (
            "invalid UTF-8 in a string",
            b"{\"hostname\": \"\xff\xfe\", \"id\": \"\xc3\x28\"}",
        ),
        (
            "a lone surrogate escape",
            b"{\"hostname\": \"\\ud800\", \"id\": \"\\udfff\"}",
        ),
    ];
    let all = bad_json
        .iter()
        .map(|(n, b)| (format!("bad JSON ({n})"), b.to_vec()))
        .chain(
            wrong_type
                .into_iter()
                .map(|(n, b)| (format!("JSON of the wrong type ({n})"), b)),
        )
        .chain(
            invalid_utf8
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_vec())),
        );
    for (name, body) in all {
        for what in ENDPOINTS {
            let body = body.clone();
            cases.push(case(format!("{name} to {what}"), move |w| {
                error(&as_me(w, "POST", what, &body), 400, "bad_request")
            }));
        }
    }
    cases.push(case("hello with roles that are not a list", |w| {
        error(
            &as_me(w, "POST", "hello", br#"{"hostname": "h", "roles": "web"}"#),
            400,
            "bad_request",
        )
    }));
    // A batch settles every item: what is not a result, message or batch is rejected in the answer.
    for what in ["result", "logs", "stats"] {
        cases.push(case(format!("a batch of junk items to {what}"), move |w| {
            batch_rejects(&as_me(w, "POST", what, br#"[1, "x", null, {"id": []}]"#), 4)
        }));
    }
}

/// A 200 answer to a batch whose `n` items were all rejected, each with a reason.
fn batch_rejects(o: &Outcome, n: usize) -> Seen {
    let Some(v) = o
        .response()
        .filter(|r| r.status == 200)
        .and_then(|r| r.json())
    else {
        return Err(format!("want 200 with {n} rejected, got {}", o.summary()));
    };
    let rejected = match &v["rejected"] {
        Value::Array(items)
            if items
                .iter()
                .all(|i| i["message"].as_str().is_some_and(|m| !m.is_empty())) =>
        {
            items.len()
        }
        Value::Number(count) if v["reason"].as_str().is_some_and(|r| !r.is_empty()) => {
            count.as_u64().unwrap_or(0) as usize
        }
        _ => 0,
    };
    if rejected == n && v["recorded"].as_u64().unwrap_or(0) + v["stored"].as_u64().unwrap_or(0) == 0
    {
        Ok(format!("200, {n} rejected"))
    } else {
        Err(format!("want {n} rejected with reasons, got {v}"))
    }
}

fn result_with(field: &str, value: Value) -> Vec<u8> {
    let mut r = json!({"id": "huge", "gid": 9, "nid": 1, "cmd": "ping", "args": {}, "data": "pong",
        "level": 0, "state": "OK", "time": 0, "starttime": 1, "exit_code": 0, "streams": ["", ""], "critical": ""});
    r[field] = value;
    r.to_string().into_bytes()
}

/// A stats batch of agent 9:1 with `field` (`gid`, `nid`, `epoch`, `interval`, or the
/// counter's `sum`) set to the raw JSON `value`.
fn stats_with(field: &str, value: &str) -> Vec<u8> {
    let v = |f: &str, default: &str| {
        if f == field {
            value.to_owned()
        } else {
            default.to_owned()
        }
    };
    format!(
        r#"{{"gid": {}, "nid": {}, "epoch": {}, "interval": {}, "metrics": [{{"key": "k", "type": "counter", "sum": {}, "rate": 1}}]}}"#,
        v("gid", "9"),
        v("nid", "1"),
        v("epoch", "1"),
        v("interval", "1"),
        v("sum", "1")
    )
    .into_bytes()
}

/// A log message with `field` (`id`, `epoch` or `level`) set to the raw JSON `value`.
fn message_with(field: &str, value: &str) -> String {
    let v = |f: &str, default: &str| {
        if f == field {
            value.to_owned()
        } else {
            default.to_owned()
        }
    };
    format!(
        r#"{{"id": {}, "jobid": "j", "domain": "hostile", "name": "n", "epoch": {}, "level": {}, "data": "d"}}"#,
        v("id", "1"),
        v("epoch", "1"),
        v("level", "5")
    )
}

fn huge_numbers(cases: &mut Vec<Case>) {
    let paths = [
        ("GET", "/v1/agents/1180591620717411303424/1/cmd?wait=0"),
        ("POST", "/v1/agents/9/1180591620717411303424/result"),
        ("GET", "/v1/agents/-1/1/cmd?wait=0"),
        ("GET", "/v1/agents/1e3/1/cmd?wait=0"),
        ("GET", "/v1/agents/9/one/cmd?wait=0"),
    ];
    for (method, path) in paths {
        cases.push(case(
            format!("bad ids in the path: {method} {path}"),
            move |w| {
                let auth = bearer(&w.token);
                error(
                    &send(
                        addr(w),
                        &request(method, path, &[("Authorization", &auth)], b"{}"),
                    ),
                    400,
                    "bad_request",
                )
            },
        ));
    }
    cases.push(case(
        "u64::MAX ids in the path, with a token of another agent",
        |w| {
            let auth = bearer(&w.token);
            let path = "/v1/agents/18446744073709551615/18446744073709551615/cmd?wait=0";
            let o = send(
                addr(w),
                &request("GET", path, &[("Authorization", &auth)], b""),
            );
            error(&o, 403, "forbidden")
        },
    ));
    let long_id = "x".repeat(300);
    let many: Vec<String> = (0..2000).map(|i| format!("id{i}")).collect();
    let queries = [
        "wait=1e30".to_owned(),
        "wait=0&max=-1".into(),
        "wait=-1".into(),
        "wait=18446744073709551616".into(),
        "wait=0&max=99999999999999999999999".into(),
        "wait=0&max=1e3".into(),
        format!("wait=0&ack={}", many.join(",")),
        format!("wait=0&ack={long_id}"),
    ];
    for query in queries {
        let shown = if query.len() > 60 {
            format!("{}… ({} bytes)", &query[..40], query.len())
        } else {
            query.clone()
        };
        cases.push(case(format!("bad poll query: {shown}"), move |w| {
            error(
                &as_me(w, "GET", &format!("cmd?{query}"), b""),
                400,
                "bad_request",
            )
        }));
    }
    let results = [
        ("run", json!(1e300)),
        (
            "gid",
            serde_json::from_str::<Value>("1180591620717411303424").expect("big number"),
        ),
        ("time", json!(-1)),
        ("starttime", json!(1e30)),
        ("exit_code", json!(1u64 << 40)),
        ("level", json!(300)),
    ];
    for (field, value) in results {
        cases.push(case(format!("a result with {field}: {value}"), move |w| {
            error(
                &as_me(w, "POST", "result", &result_with(field, value.clone())),
                400,
                "bad_request",
            )
        }));
    }
    for (field, value) in [
        ("epoch", "-1"),
        ("interval", "1e999"),
        ("interval", "-1"),
        ("gid", "1180591620717411303424"),
        ("sum", "1e999"),
    ] {
        cases.push(case(
            format!("a stats batch with {field}: {value}"),
            move |w| {
                error(
                    &as_me(w, "POST", "stats", &stats_with(field, value)),
                    400,
                    "bad_request",
                )
            },
        ));
    }
    for (field, value) in [("started", "-1"), ("started", "1e300")] {
        cases.push(case(format!("a hello with {field}: {value}"), move |w| {
            let body = format!("{{\"hostname\": \"h\", \"{field}\": {value}}}");
            error(
                &as_me(w, "POST", "hello", body.as_bytes()),
                400,
                "bad_request",
            )
        }));
    }
    for (field, value) in [
        ("epoch", "-1"),
        ("id", "1180591620717411303424"),
        ("level", "256"),
    ] {
        cases.push(case(
            format!("a log message with {field}: {value}"),
            move |w| {
                let body = format!("[[{}]]", message_with(field, value));
                batch_rejects(&as_me(w, "POST", "logs", body.as_bytes()), 1)
            },
        ));
    }
}

fn other_agents(cases: &mut Vec<Case>) {
    cases.push(case("a result naming agent 9:2 posted as 9:1", |w| {
        error(
            &as_me(w, "POST", "result", &result_with("nid", json!(2))),
            400,
            "mismatched_agent",
        )
    }));
    cases.push(case("a batch with a result naming agent 9:2", |w| {
        let body = format!(
            "[{}]",
            String::from_utf8_lossy(&result_with("nid", json!(2)))
        );
        let o = as_me(w, "POST", "result", body.as_bytes());
        let v = o
            .response()
            .filter(|r| r.status == 200)
            .and_then(|r| r.json());
        match v {
            Some(v) if v["rejected"][0]["error"] == "mismatched_agent" => {
                Ok("200, rejected as mismatched_agent".into())
            }
            _ => Err(format!(
                "want 200 with rejected[0].error mismatched_agent, got {}",
                o.summary()
            )),
        }
    }));
    cases.push(case("a stats batch naming agent 9:2 posted as 9:1", |w| {
        error(
            &as_me(w, "POST", "stats", &stats_with("nid", "2")),
            400,
            "mismatched_agent",
        )
    }));
    cases.push(case("an array with a stats batch naming agent 9:2", |w| {
        let body = format!("[{}]", String::from_utf8_lossy(&stats_with("nid", "2")));
        batch_rejects(&as_me(w, "POST", "stats", body.as_bytes()), 1)
    }));
    let paths = [
        ("POST", "/v1/agents/9/2/hello"),
        ("GET", "/v1/agents/9/2/cmd?wait=0"),
        ("POST", "/v1/agents/9/2/result"),
        ("POST", "/v1/agents/9/2/logs"),
        ("POST", "/v1/agents/9/2/stats"),
        ("POST", "/v1/agents/1/1/result"),
        ("GET", "/v1/agents/1/1/cmd?wait=0&ack=x"),
    ];
    for (method, path) in paths {
        cases.push(case(
            format!("another agent's path with 9:1's token: {method} {path}"),
            move |w| {
                let auth = bearer(&w.token);
                let o = send(
                    addr(w),
                    &request(method, path, &[("Authorization", &auth)], b"[]"),
                );
                error(&o, 403, "forbidden")
            },
        ));
    }
}

/// A bad `Authorization` value (or none) of one of several kinds.
fn bad_auth(rng: &mut Rng, w: &World) -> Option<String> {
    let printable = |rng: &mut Rng, n: u64| -> String {
        (0..n)
            .map(|_| char::from(b'!' + rng.below(94) as u8))
            .collect()
    };
    match rng.below(7) {
        0 => None,
        1 => Some("Bearer ".into()),
        2 => Some(format!("Bearer jsa_{:x}{:x}", rng.next(), rng.next())),
        3 => {
            let n = 1 + rng.below(200);
            Some(format!("Bearer {}", printable(rng, n)))
        }
        4 => Some(format!("Basic {}", printable(rng, 20))),
        5 => Some(format!("Bearer {}x", w.token)),
        _ => Some(format!("bearer {}", w.token.to_uppercase())),
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn bad_tokens(cases: &mut Vec<Case>) {
    cases.push(case(
        "1000 requests with bad tokens on random agent paths",
        |w| {
            let pid = w
                .pids
                .iter()
                .find(|(n, _)| n == "jsacc main")
                .expect("main")
                .1;
            let before = rss_kib(pid);
            let http = w.main.http();
            let mut rng = Rng::new();
            let mut other = Vec::new();
            for _ in 0..1000 {
                let (gid, nid) = (rng.below(1 << 32), rng.below(1 << 32));
                let what =
                    ["hello", "cmd?wait=0", "result", "logs", "stats"][rng.below(5) as usize];
                let url = format!("{}/v1/agents/{gid}/{nid}/{what}", w.main.url());
                let mut req = if what.starts_with("cmd") {
                    http.get(url)
                } else {
                    http.post(url).body("{}")
                };
                if let Some(a) = bad_auth(&mut rng, w) {
                    req = req.header("Authorization", a);
                }
                match req.send() {
                    Ok(r) => {
                        let status = r.status();
                        let body = r.json::<Value>().unwrap_or(Value::Null);
                        if status != 401 || body["error"] != "unauthorized" {
                            other.push(format!("{what}: {status} {body}"));
                        }
                    }
                    Err(e) => other.push(format!("{what}: {e}")),
                }
            }
            let after = rss_kib(pid);
            let note = format!(
                "controller RSS {} MiB before, {} MiB after",
                before >> 10,
                after >> 10
            );
            eprintln!("     {note}");
            if !other.is_empty() {
                return Err(format!(
                    "{} not 401 unauthorized, e.g. {:?}; {note}",
                    other.len(),
                    &other[..other.len().min(5)]
                ));
            }
            if after > before + (200 << 10) {
                return Err(format!("RSS grew by more than 200 MiB: {note}"));
            }
            Ok(format!("1000 × 401; {note}"))
        },
    ));
    cases.push(case("1000 pipelined polls with bad tokens on one connection", |w| {
        let mut bytes = Vec::new();
        for i in 0..1000 {
            let close = if i == 999 { "close" } else { "keep-alive" };
            bytes.extend_from_slice(
                format!("GET /v1/agents/{i}/1/cmd?wait=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer jsa_{i}\r\nConnection: {close}\r\n\r\n").as_bytes(),
            );
        }
        let mut stream = connect(addr(w));
        let _ = stream.write_all(&bytes);
        let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(60));
        let answers = String::from_utf8_lossy(&got).matches("HTTP/1.1 401").count();
        if answers == 1000 && closed {
            Ok("1000 × 401, then closed".into())
        } else {
            Err(format!("{answers} of 1000 answered 401 (closed: {closed})"))
        }
    }));
}
