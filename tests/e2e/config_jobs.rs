//! Config-file jobs end to end (issue 14): `[[job]]` tables in the agent config are started by
//! the agent itself under ids `cfg:<gid>:<nid>:<id>`; their run results land in
//! `cmds_queue_cfg:…` and open a job record at the controller, coalesced into few posts; a bad
//! table stops the agent at start; no agent posts for another agent's config job.

use std::time::Duration;

use serde_json::{json, Value};
use tests::{bin_dir, command, wait_for, Cluster};

const T: Duration = Duration::from_secs(60);

const TICK: &str = r#"
[[job]]
id = "tick"
cmd = "echo"
args = ["tick"]
env = { SECRET = "e2e-secret-value" }
every = 1
domain = "cfgtest"
name = "tick"
output = false

[[job]]
id = "daemon"
cmd = "sleep"
args = ["300"]
domain = "cfgtest"
name = "daemon"
"#;

fn members(c: &Cluster, key: &str) -> Vec<String> {
    c.client.query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
}

/// How many result posts the controller has answered (its latency histogram's count).
fn result_posts(c: &Cluster) -> u64 {
    let text = c
        .controller
        .http()
        .get(format!("{}/metrics", c.controller.url()))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    let line = "jsacc_http_request_duration_seconds_count{route=\"result\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn config_jobs_run_from_boot_and_their_runs_reach_redis_in_few_posts() {
    let c = Cluster::start_configured(TICK);
    let id = "cfg:1:1:tick";
    let runs = wait_for("a dozen runs recorded", T, || {
        let results = c.client.results(id);
        (results.len() >= 12).then_some(results)
    });
    let numbers: Vec<u64> = runs
        .iter()
        .map(|r| r["run"].as_u64().unwrap_or(0))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert!(
        runs.iter()
            .all(|r| r["final"] == json!(false) && r["state"] == "OK"),
        "{runs:?}"
    );
    assert_eq!(runs[0]["streams"][0], "tick\n");
    // Its env is shown by its keys only, in its results and its record alike.
    assert_eq!(runs[0]["args"]["env"], json!({"SECRET": "***"}));
    let record: Vec<String> = c.client.query(redis::cmd("HVALS").arg(format!("job:{id}")));
    assert!(
        record.iter().all(|v| !v.contains("e2e-secret-value")),
        "{record:?}"
    );
    // Coalesced: the runs went up with the agent's periodic uploads, not one post per run.
    let posts = result_posts(&c);
    assert!(
        posts * 2 <= numbers.len() as u64,
        "{posts} result posts for {} runs",
        numbers.len()
    );

    let field = |f: &str| c.client.job_field(id, f).unwrap_or_default();
    assert_eq!(field("state"), "RUNNING");
    assert_eq!(field("targets"), "[\"1:1\"]");
    assert_eq!(field("submitted_by"), "config");
    let cmd: Value = serde_json::from_str(&field("cmd")).expect("cmd JSON");
    assert_eq!(
        (
            cmd["cmd"].as_str(),
            cmd["args"]["recurring_period"].as_u64()
        ),
        (Some("execute"), Some(1))
    );
    assert!(members(&c, "jobs:all").contains(&id.to_owned()));
    assert!(members(&c, "jobs:agent:1:1").contains(&id.to_owned()));
    assert_eq!(members(&c, "jobs:name:cfgtest/tick"), [id]);

    // The daemon is a process of the agent's like any other: `jsctl ps` (get_processes_stats) lists it.
    let ps = command(1, 1, "get_processes_stats", json!({"domain": "cfgtest"}));
    let answer = c.client.run(&ps, T);
    let rows = answer["data"].as_array().cloned().unwrap_or_default();
    let daemon = rows.iter().find(|r| r["name"] == "daemon");
    assert!(
        daemon.is_some_and(|r| r["jobs"] == json!(["cfg:1:1:daemon"])),
        "{answer}"
    );

    // The daemon never posted a result, yet its record exists: the agent's hello declared it.
    let daemon_id = "cfg:1:1:daemon";
    assert_eq!(
        c.client.job_field(daemon_id, "state").as_deref(),
        Some("RUNNING")
    );
    assert_eq!(
        c.client.job_field(daemon_id, "submitted_by").as_deref(),
        Some("config")
    );
    assert!(members(&c, "jobs:agent:1:1").contains(&daemon_id.to_owned()));

    // `kill` works as for any job (the config brings it back at the next agent start).
    let kill = command(1, 1, "kill", json!({"id": id}));
    assert_eq!(c.client.run(&kill, T)["state"], "OK");
    let last = wait_for("the final result", T, || {
        c.client
            .results(id)
            .into_iter()
            .find(|r| r.get("final").is_none())
    });
    assert_eq!(last["state"], "KILLED", "{last}");
    wait_for("the record KILLED", T, || {
        (field("state") == "KILLED").then_some(())
    });
}

#[test]
fn a_bad_table_stops_the_agent_at_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken").expect("token");
    let config = dir.path().join("agent.toml");
    let text = format!(
        "controller = \"http://127.0.0.1:1\"\ngid = 1\nnid = 1\ntoken_file = {:?}\n\
         data_dir = {:?}\n[[job]]\nid = \"ok\"\ncmd = \"true\"\nevery = 5\n\
         [[job]]\nid = \"backup\"\ncmd = \"true\"\nevry = 5\n",
        token.display().to_string(),
        dir.path().join("data").display().to_string(),
    );
    std::fs::write(&config, text).expect("config");
    let out = std::process::Command::new(bin_dir().join("jsagent"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("jsagent runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("job[2] (id \"backup\"): unknown key `evry`"),
        "{stderr}"
    );
}

#[test]
fn an_agent_cannot_post_for_another_agents_config_job() {
    let c = Cluster::start(&[&[], &[]]);
    let http = c.controller.http();
    let token = c.agents[0].token();
    let result = json!({"id": "cfg:1:2:x", "gid": 1, "nid": 1, "cmd": "execute",
        "args": {"cmd": "true", "max_time": -1}, "state": "OK", "run": 1});
    let answer = http
        .post(format!("{}/v1/agents/1/1/result", c.controller.url()))
        .bearer_auth(token.trim())
        .json(&result)
        .send()
        .expect("post");
    assert_eq!(answer.status(), reqwest::StatusCode::NOT_FOUND);
    let body: Value = answer.json().expect("JSON error");
    assert_eq!(body["error"], "unknown_job", "{body}");
    assert_eq!(c.client.job_field("cfg:1:2:x", "targets"), None);
    assert!(c.client.results("cfg:1:2:x").is_empty());
    // Nor may a client route a command under such an id.
    let routed = json!({"id": "cfg:1:1:y", "gid": 1, "nid": 1, "cmd": "ping"});
    let refused = c.client.run(&routed, T);
    assert_eq!(refused["state"], "ERROR", "{refused}");
    assert!(
        refused["data"]
            .as_str()
            .is_some_and(|d| d.contains("reserved")),
        "{refused}"
    );
}
