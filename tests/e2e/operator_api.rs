//! The operator HTTP API end to end (issue 13): an account made with `jsacc user add` submits a
//! job over HTTPS to the real controller, follows its live output as Server-Sent Events while
//! it runs, kills it, and finds it all in the history and the audit trail.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{bin_dir, Cluster};

const T: Duration = Duration::from_secs(30);

/// `jsacc user add NAME --role ROLE`: the token from its last line.
fn user_add(c: &Cluster, name: &str, role: &str) -> String {
    let out = Command::new(bin_dir().join("jsacc"))
        .args(["user", "add", name, "--role", role])
        .args(c.redis.jsacc_args())
        .output()
        .expect("jsacc user add runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().expect("a token").trim().to_owned()
}

#[test]
fn an_operator_runs_follows_and_kills_a_job_over_https_and_it_is_audited() {
    let c = Cluster::start(&[&[]]);
    let operator = user_add(&c, "otto", "operator");
    let viewer = user_add(&c, "vera", "viewer");
    let http = c.controller.http();
    let url = |path: &str| format!("{}{path}", c.controller.url());
    let as_json = |r: reqwest::blocking::Response| -> (u16, Value) {
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    };

    let cmd = json!({"gid": 1, "nid": 1, "cmd": "execute",
                     "args": {"cmd": "/bin/sh", "args": ["-c", "echo first; sleep 60; echo never"]}});
    let refused = http
        .post(url("/v1/jobs"))
        .bearer_auth(&viewer)
        .json(&cmd)
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let (status, body) = as_json(
        http.post(url("/v1/jobs"))
            .bearer_auth(&operator)
            .json(&cmd)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();

    // Its first line arrives as an event while the job still runs.
    let stream = http
        .get(url(&format!("/v1/jobs/{id}/output?follow=1")))
        .bearer_auth(&viewer)
        .send()
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let mut events = BufReader::new(stream).lines();
    let started = Instant::now();
    let first = loop {
        let line = events.next().expect("the stream goes on").expect("a line");
        if let Some(data) = line.strip_prefix("data: ") {
            break serde_json::from_str::<Value>(data).expect("a line as JSON");
        }
        assert!(started.elapsed() < T, "no line within {T:?}");
    };
    assert_eq!(
        (&first["line"], &first["agent"]),
        (&json!("first"), &json!("1:1"))
    );
    let (_, record) = as_json(
        http.get(url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&viewer)
            .send()
            .unwrap(),
    );
    assert_eq!(record["state"], "RUNNING", "{record}");
    assert_eq!(record["submitted_by"], "otto");

    let killed = http
        .delete(url(&format!("/v1/jobs/{id}")))
        .bearer_auth(&operator)
        .send()
        .unwrap();
    assert_eq!(killed.status().as_u16(), 202);
    let end = loop {
        let line = events
            .next()
            .expect("the stream ends with an event")
            .expect("a line");
        if line == "event: end" {
            break events.next().expect("its data").expect("a line");
        }
        assert!(started.elapsed() < T * 2, "no end event");
    };
    assert_eq!(end, r#"data: {"state":"KILLED"}"#);

    let (_, listed) = as_json(
        http.get(url("/v1/jobs?agent=1:1&state=KILLED&since=1h"))
            .bearer_auth(&viewer)
            .send()
            .unwrap(),
    );
    assert_eq!(listed["jobs"][0]["id"], json!(id), "{listed}");
    let trail: Vec<(String, Vec<(String, String)>)> = c
        .client
        .query(redis::cmd("XRANGE").arg("audit").arg("-").arg("+"));
    let field = |f: &[(String, String)], k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let writes: Vec<(String, String)> = trail
        .iter()
        .map(|(_, f)| (field(f, "who"), field(f, "what")))
        .filter(|(who, _)| who == "otto")
        .collect();
    assert_eq!(
        writes,
        [
            ("otto".to_owned(), "job submit".to_owned()),
            ("otto".to_owned(), "job kill".to_owned())
        ]
    );
}
