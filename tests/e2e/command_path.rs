//! The command path end to end: a client that knows only DESIGN §3–§4 pushes into Redis,
//! jsacc routes, jsagent runs, the result comes back with every field.

use std::time::Duration;

use serde_json::{json, Value};
use tests::{command, execute, wait_for, Cluster, Controller, ControllerOpts, Redis};

const T: Duration = Duration::from_secs(30);

/// Every field of DESIGN §3, with its JSON type.
fn assert_full_result(r: &Value) {
    for (field, ok) in [
        ("id", r["id"].is_string()),
        ("gid", r["gid"].is_u64()),
        ("nid", r["nid"].is_u64()),
        ("cmd", r["cmd"].is_string()),
        ("args", r["args"].is_object()),
        ("data", !r["data"].is_null()),
        ("level", r["level"].is_u64()),
        ("state", r["state"].is_string()),
        ("time", r["time"].is_u64()),
        (
            "starttime",
            r["starttime"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000),
        ),
        ("exit_code", r.get("exit_code").is_some()),
        (
            "streams",
            r["streams"].as_array().is_some_and(|s| s.len() == 2),
        ),
        ("critical", r["critical"].is_string()),
    ] {
        assert!(ok, "field `{field}` missing or wrong in {r}");
    }
    serde_json::from_value::<schemas::JobResult>(r.clone()).expect("parses as the contract's type");
}

#[test]
fn a_redis_only_client_gets_every_field_of_a_result() {
    let c = Cluster::start(&[&[]]);
    let mut cmd = execute(
        1,
        1,
        "/bin/sh",
        &["-c", "cat; echo to-err >&2; echo \"$GREETING\" from $(pwd)"],
    );
    cmd["args"]["env"] = json!({"GREETING": "hello"});
    cmd["args"]["workingdir"] = json!("$tmp");
    cmd["data"] = json!("from stdin\n");
    let r = c.client.run(&cmd, T);
    assert_full_result(&r);
    assert_eq!(
        (r["state"].as_str(), r["exit_code"].as_i64()),
        (Some("OK"), Some(0)),
        "{r}"
    );
    let out = r["streams"][0].as_str().expect("stdout");
    let tmp = std::env::temp_dir();
    assert!(
        out.contains("from stdin") && out.contains(&format!("hello from {}", tmp.display())),
        "{out}"
    );
    assert!(r["streams"][1].as_str().expect("stderr").contains("to-err"));
    assert_eq!(r["id"], cmd["id"]);
    assert_eq!(r["args"], cmd["args"]);
    let id = cmd["id"].as_str().expect("id");
    assert_eq!(c.client.job_field(id, "state").as_deref(), Some("OK"));
    assert_eq!(
        c.client.job_field(id, "targets").as_deref(),
        Some("[\"1:1\"]")
    );
    assert!(c.client.job_field(id, "result:1:1").is_some());
    let ttl = |key: String| -> i64 {
        redis::cmd("TTL")
            .arg(key)
            .query(&mut c.client.blocking())
            .expect("TTL")
    };
    assert!(ttl(format!("job:{id}")) > 0, "job records expire");

    let ping = command(1, 1, "ping", json!({}));
    c.client.push(&ping);
    let pid = ping["id"].as_str().expect("id");
    wait_for("ping answered", T, || {
        (c.client.job_field(pid, "state")? == "OK").then_some(())
    });
    assert!(ttl(format!("cmds_queue_{pid}")) > 0, "results expire");
    let ping = c.client.result(pid, T).expect("ping result");
    assert_full_result(&ping);
    assert_eq!(
        (ping["state"].as_str(), ping["data"].as_str()),
        (Some("OK"), Some("pong"))
    );
}

#[test]
fn exit_codes_timeouts_and_missing_executables() {
    let c = Cluster::start(&[&[]]);
    let r = c.client.run(&execute(1, 1, "sh", &["-c", "exit 3"]), T);
    assert_eq!(
        (r["state"].as_str(), r["exit_code"].as_i64()),
        (Some("ERROR"), Some(3)),
        "{r}"
    );

    let r = c.client.run(&execute(1, 1, "/no/such/program", &[]), T);
    assert_eq!(r["state"], "ERROR");
    assert!(
        r["data"]
            .as_str()
            .is_some_and(|d| d.contains("/no/such/program")),
        "{r}"
    );

    // A timeout kills the whole tree: the grandchild's pid is printed first.
    let mut cmd = execute(1, 1, "sh", &["-c", "sleep 300 & echo $!; wait"]);
    cmd["args"]["max_time"] = json!(1);
    let r = c.client.run(&cmd, T);
    assert_eq!(r["state"], "TIMEOUT", "{r}");
    let pid: u32 = r["streams"][0]
        .as_str()
        .and_then(|s| s.trim().parse().ok())
        .expect("grandchild pid");
    wait_for("grandchild gone", Duration::from_secs(10), || {
        tests::gone(pid).then_some(())
    });
}

#[test]
fn role_routing_and_fanout() {
    let c = Cluster::start(&[&["web"], &["web", "db"], &[]]);
    let mut cmd = command(1, 0, "ping", json!({}));
    cmd.as_object_mut().expect("object").remove("nid");
    cmd["role"] = json!("db");
    let r = c.client.run(&cmd, T);
    assert_eq!(
        (r["state"].as_str(), r["nid"].as_u64()),
        (Some("OK"), Some(2)),
        "{r}"
    );

    let mut fan = command(1, 0, "ping", json!({}));
    fan.as_object_mut().expect("object").remove("nid");
    fan["role"] = json!("web");
    fan["fanout"] = json!(true);
    let id = fan["id"].as_str().expect("id").to_owned();
    c.client.push(&fan);
    let mut nids: Vec<u64> = (0..2)
        .map(|_| {
            c.client.result(&id, T).expect("one result per agent")["nid"]
                .as_u64()
                .expect("nid")
        })
        .collect();
    nids.sort();
    assert_eq!(nids, [1, 2]);
    assert_eq!(
        c.client.result(&id, Duration::from_secs(1)),
        None,
        "exactly one result per agent"
    );
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("OK"));

    let mut none = command(1, 0, "ping", json!({}));
    none.as_object_mut().expect("object").remove("nid");
    none["role"] = json!("nobody");
    let r = c.client.run(&none, T);
    assert_eq!(r["state"], "ERROR");
    assert!(
        r["data"]
            .as_str()
            .is_some_and(|d| d.contains("no live agent with role `nobody`")),
        "{r}"
    );
}

#[test]
fn state_changes_are_published() {
    let c = Cluster::start(&[&[]]);
    let mut sub = c.client.blocking();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("jsacc:events").expect("subscribe");
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let cmd = command(1, 1, "ping", json!({}));
    c.client.push(&cmd);
    let mut states = vec![];
    while states.last().map(String::as_str) != Some("OK") {
        let msg = pubsub.get_message().expect("an event");
        let event: Value =
            serde_json::from_str(&msg.get_payload::<String>().expect("text")).expect("JSON");
        if event["id"] == cmd["id"] {
            assert_eq!(
                (event["gid"].as_u64(), event["nid"].as_u64()),
                (Some(1), Some(1)),
                "{event}"
            );
            states.push(event["state"].as_str().expect("state").to_owned());
        }
    }
    assert_eq!(states, ["QUEUED", "RUNNING", "OK"]);
}

#[test]
fn max_wait_ends_a_command_for_an_offline_agent() {
    let redis = Redis::start();
    let _controller = Controller::start(&redis, ControllerOpts::default());
    redis.token_add(1, 9);
    let client = redis.client();
    let mut cmd = command(1, 9, "ping", json!({"max_wait": 1}));
    let r = client.run(&cmd, T);
    assert_eq!(r["state"], "ERROR");
    assert!(
        r["data"]
            .as_str()
            .is_some_and(|d| d.contains("not delivered")),
        "{r}"
    );
    assert_eq!(
        client.llen("agent:{1:9}:queue"),
        0,
        "taken out of the agent's queue"
    );
    // Without max_wait it waits for the agent.
    cmd = command(1, 9, "ping", json!({}));
    client.push(&cmd);
    assert_eq!(
        client.result(cmd["id"].as_str().expect("id"), Duration::from_secs(3)),
        None
    );
    assert_eq!(client.llen("agent:{1:9}:queue"), 1);
}

#[test]
fn shutdown_does_not_wait_for_parked_polls() {
    let redis = Redis::start();
    let mut controller = Controller::start(&redis, ControllerOpts::default());
    let token = redis.token_add(1, 1);
    let http = controller.http();
    let url = controller.url();
    // A poll parked for 55 s. Released on shutdown it gets a clean 204; cut by the server's
    // forced close (after its 5 s grace) it would get a connection error instead.
    let poll = {
        let (http, url) = (http.clone(), url.clone());
        std::thread::spawn(move || {
            http.get(format!("{url}/v1/agents/1/1/cmd?wait=55"))
                .bearer_auth(token)
                .send()
                .map(|r| r.status())
        })
    };
    wait_for("a parked poll", T, || {
        let text = http
            .get(format!("{url}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .any(|l| l == "jsacc_polls_parked 1")
            .then_some(())
    });
    let took = controller.proc().terminate(Duration::from_secs(20));
    assert!(
        took.is_some(),
        "jsacc did not exit on SIGTERM:\n{}",
        controller.proc().output()
    );
    let status = poll
        .join()
        .expect("poll thread")
        .expect("the parked poll got an answer");
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
}

#[test]
fn two_controllers_share_one_redis() {
    let mut c = Cluster::start(&[&[]]);
    let second = Controller::start(&c.redis, ControllerOpts::default());
    let ids: Vec<Value> = (0..50).map(|_| command(1, 1, "ping", json!({}))).collect();
    for cmd in &ids {
        c.client.push(cmd);
    }
    for cmd in &ids {
        let r = c
            .client
            .result(cmd["id"].as_str().expect("id"), T)
            .unwrap_or_else(|| panic!("no result\n{}", c.dump()));
        assert_eq!(r["state"], "OK");
    }
    // The agent's controller goes away; the other one keeps routing (the agent still polls the first).
    drop(second);
    c.controller.kill9();
    c.controller.restart();
    let r = c.client.run(&command(1, 1, "ping", json!({})), T);
    assert_eq!(r["state"], "OK");
}
