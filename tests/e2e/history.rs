//! The job history (DESIGN §11, docs/protocol.md): every routed job is indexed by time in
//! `jobs:all`, per target in `jobs:agent:<g:n>` and per `args.domain`/`args.name` in
//! `jobs:name:<d>/<n>`, and its record says when it started and ended and who submitted it.

use std::time::Duration;

use serde_json::json;
use tests::{execute, Cluster};

const T: Duration = Duration::from_secs(30);

fn members(c: &Cluster, key: &str) -> Vec<String> {
    c.client.query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
}

#[test]
fn every_routed_job_is_in_the_history_with_its_times_and_submitter() {
    let c = Cluster::start(&[&[], &[]]);
    let mut named = execute(1, 1, "/bin/echo", &["hi"]);
    named["args"]["domain"] = json!("ops");
    named["args"]["name"] = json!("echo");
    named["submitted_by"] = json!("alice");
    let r = c.client.run(&named, T);
    assert_eq!(r["state"], "OK", "{r}");
    let plain = execute(1, 2, "/bin/true", &[]);
    c.client.run(&plain, T);
    let (named_id, plain_id) = (named["id"].as_str().unwrap(), plain["id"].as_str().unwrap());

    let all = members(&c, "jobs:all");
    assert!(
        all.contains(&named_id.to_owned()) && all.contains(&plain_id.to_owned()),
        "{all:?}"
    );
    assert_eq!(members(&c, "jobs:agent:1:1"), [named_id]);
    assert_eq!(members(&c, "jobs:agent:1:2"), [plain_id]);
    assert_eq!(members(&c, "jobs:name:ops/echo"), [named_id]);

    let field = |id: &str, f: &str| c.client.job_field(id, f).unwrap_or_default();
    let created: u64 = field(named_id, "created").parse().expect("created");
    let started: u64 = field(named_id, "started").parse().expect("started");
    let ended: u64 = field(named_id, "ended").parse().expect("ended");
    assert!(
        created <= started && started <= ended,
        "{created} {started} {ended}"
    );
    assert_eq!(field(named_id, "submitted_by"), "alice");
    assert_eq!(field(plain_id, "submitted_by"), "redis");
}

#[test]
fn a_refused_command_with_an_id_is_in_the_history_as_an_error() {
    let c = Cluster::start(&[&[]]);
    let bad = json!({"id": "history-bad", "gid": 1, "nid": 1, "cmd": "execute",
                     "args": {"max_time": "soon"}});
    c.client.push(&bad);
    let r = c.client.result("history-bad", T).expect("an ERROR answer");
    assert_eq!(r["state"], "ERROR", "{r}");
    assert!(members(&c, "jobs:all").contains(&"history-bad".to_owned()));
    assert!(c.client.job_field("history-bad", "ended").is_some());
}
