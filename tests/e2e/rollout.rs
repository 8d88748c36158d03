//! Rollouts (issue 14 item 4): a fanout with `batch` runs on its agents batch after batch,
//! stops when more than `max_failures` failed (the rest end `ERROR` "rollout stopped"), gives
//! every target exactly one result, and carries on across a kill -9 of the controller.

use std::time::Duration;

use serde_json::{json, Value};
use tests::{command, wait_for, Cluster, ControllerOpts, RedisCluster, RedisTarget};

const T: Duration = Duration::from_secs(60);

/// A fanout to role `web` of `sh -c SCRIPT` with the rollout fields `rollout`.
fn rollout(script: &str, rollout: Value) -> Value {
    let mut cmd = command(
        1,
        0,
        "execute",
        json!({"cmd": "/bin/sh", "args": ["-c", script, "$agentroot"]}),
    );
    let fields = cmd.as_object_mut().expect("an object");
    fields.remove("nid");
    fields.insert("role".into(), json!("web"));
    fields.insert("fanout".into(), json!(true));
    fields.extend(rollout.as_object().expect("an object").clone());
    cmd
}

/// Every result of job `id`, by agent nid, once `n` arrived; then checks no more come.
fn all_results<R: RedisTarget>(c: &Cluster<R>, id: &str, n: usize) -> Vec<(u64, Value)> {
    let mut got: Vec<(u64, Value)> = (0..n)
        .map(|_| {
            let r = c
                .client
                .result(id, T)
                .unwrap_or_else(|| panic!("a result per agent within {T:?}\n{}", c.dump()));
            (r["nid"].as_u64().expect("nid"), r)
        })
        .collect();
    assert_eq!(
        c.client.result(id, Duration::from_secs(2)),
        None,
        "exactly one result per agent"
    );
    got.sort_by_key(|(nid, _)| *nid);
    let nids: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(nids, (1..=n as u64).collect::<Vec<_>>());
    got
}

fn start_and_end(r: &Value) -> (u64, u64) {
    let start = r["starttime"].as_u64().expect("starttime");
    (start, start + r["time"].as_u64().expect("time"))
}

#[test]
fn batches_run_in_order_and_too_many_failures_stop_the_rest() {
    let c = Cluster::start(&[&["web"] as &[&str]; 5]);
    // Agents 1:3 and 1:4 fail: a file in their data dir says so.
    for a in &c.agents[2..4] {
        std::fs::write(a.data_dir().join("fail"), "").expect("writable");
    }
    let cmd = rollout(
        r#"test ! -e "$0/fail""#,
        json!({"batch": 2, "batch_wait": 1, "max_failures": 1}),
    );
    let id = cmd["id"].as_str().expect("id").to_owned();
    c.client.push(&cmd);
    let got = all_results(&c, &id, 5);
    let states: Vec<&str> = got
        .iter()
        .map(|(_, r)| r["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["OK", "OK", "ERROR", "ERROR", "ERROR"], "{got:?}");
    let stopped = "rollout stopped: 2 of 4 failed (max_failures 1)";
    assert_eq!(got[4].1["data"], stopped, "{:?}", got[4]);
    // The second batch started after the first one ended and batch_wait passed.
    let first_end = got[..2].iter().map(|(_, r)| start_and_end(r).1).max();
    let second_start = got[2..4].iter().map(|(_, r)| start_and_end(r).0).min();
    assert!(
        second_start >= first_end.map(|e| e + 1000),
        "{first_end:?} {second_start:?}"
    );
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("ERROR"));
    assert_eq!(c.client.job_field(&id, "released").as_deref(), Some("4"));
    assert_eq!(c.client.job_field(&id, "failed").as_deref(), Some("2"));
    assert_eq!(c.client.job_field(&id, "stopped").as_deref(), Some(stopped));
}

#[test]
fn a_new_controller_carries_on_a_rollout_after_a_kill_9() {
    let mut c = Cluster::start(&[&["web"] as &[&str]; 3]);
    let cmd = rollout("true", json!({"batch": 1, "batch_wait": 3}));
    let id = cmd["id"].as_str().expect("id").to_owned();
    c.client.push(&cmd);
    let first = c.client.result(&id, T).expect("the first batch's result");
    assert_eq!(first["nid"], 1, "{first}");
    // Between batches: 1:1 answered, 1:2 waits for batch_wait.
    assert_eq!(c.client.job_field(&id, "released").as_deref(), Some("1"));
    c.controller.kill9();
    c.controller.restart();
    let rest: Vec<Value> = (0..2)
        .map(|_| c.client.result(&id, T).expect("the other batches' results"))
        .collect();
    let nids: Vec<u64> = rest
        .iter()
        .map(|r| r["nid"].as_u64().expect("nid"))
        .collect();
    assert_eq!(nids, [2, 3], "{rest:?}");
    assert!(rest.iter().all(|r| r["state"] == "OK"), "{rest:?}");
    assert_eq!(c.client.result(&id, Duration::from_secs(2)), None);
    wait_for("the job ends OK", T, || {
        (c.client.job_field(&id, "state").as_deref() == Some("OK")).then_some(())
    });
}

/// On a Redis Cluster `job:<id>`, `{cmds_queue}:rollouts` and each agent's queue are in other
/// slots: each step of a rollout is a single-slot script or command.
#[test]
fn a_rollout_runs_on_a_redis_cluster() {
    let roles: &[&[&str]] = &[&["web"], &["web"], &["web"]];
    let c = Cluster::start_on(RedisCluster::start(), roles, ControllerOpts::default(), "");
    let cmd = rollout("true", json!({"batch": "34%", "max_failures": 0}));
    let id = cmd["id"].as_str().expect("id").to_owned();
    c.client.push(&cmd);
    let got = all_results(&c, &id, 3);
    assert!(got.iter().all(|(_, r)| r["state"] == "OK"), "{got:?}");
    let (first, last) = (start_and_end(&got[0].1), start_and_end(&got[2].1));
    assert!(last.0 >= first.1, "batches of 2 then 1: {got:?}");
}
