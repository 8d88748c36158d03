//! `kill` end to end: a client pushes a kill for a running job; the agent kills the job's whole
//! process tree, and both the job (`KILLED`) and the kill (`OK`) get their results.

use std::time::Duration;

use serde_json::json;
use tests::{command, execute, gone, wait_for, Cluster};

const T: Duration = Duration::from_secs(30);

#[test]
fn kill_ends_a_running_job_and_its_grandchild() {
    let c = Cluster::start(&[&[]]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("grandchild.pid");
    // The grandchild's pid goes to stdout (checked in the result) and to `$0`, a file: the job
    // record says RUNNING once the agent has the job, maybe before it has spawned the tree.
    let job = execute(
        1,
        1,
        "sh",
        &[
            "-c",
            "sleep 300 & echo $!; echo $! > \"$0\"; wait",
            &pidfile.display().to_string(),
        ],
    );
    let id = job["id"].as_str().expect("id").to_owned();
    c.client.push(&job);
    wait_for("the job RUNNING", T, || {
        (c.client.job_field(&id, "state")? == "RUNNING").then_some(())
    });
    let grandchild: u32 = wait_for("the grandchild's pid", T, || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    assert!(!gone(grandchild), "the grandchild is not running");

    let kill = command(1, 1, "kill", json!({ "id": id }));
    let kill_id = kill["id"].as_str().expect("id").to_owned();
    c.client.push(&kill);
    let answer = c
        .client
        .result(&kill_id, T)
        .unwrap_or_else(|| panic!("no answer to the kill\n{}", c.dump()));
    assert_eq!(answer["state"], "OK", "{answer}");
    assert_eq!(answer["data"], json!({"killed": id, "was": "running"}));

    let r = c
        .client
        .result(&id, T)
        .unwrap_or_else(|| panic!("no result of the killed job\n{}", c.dump()));
    assert_eq!(r["state"], "KILLED", "{r}");
    assert_eq!(r["exit_code"], json!(null), "{r}");
    assert_eq!(
        r["data"],
        json!(format!("killed by kill command {kill_id}"))
    );
    assert_eq!(r["streams"][0], json!(format!("{grandchild}\n")), "{r}");
    wait_for("grandchild gone", T, || gone(grandchild).then_some(()));
    wait_for("the job record KILLED", T, || {
        (c.client.job_field(&id, "state")? == "KILLED").then_some(())
    });
    assert_eq!(c.client.job_field(&kill_id, "state").as_deref(), Some("OK"));

    // Killed at most once: a second kill finds nothing to kill.
    let again = c.client.run(&command(1, 1, "kill", json!({ "id": id })), T);
    assert_eq!(again["state"], "ERROR", "{again}");
    assert_eq!(
        again["data"],
        json!(format!("no running or queued job `{id}` on this agent"))
    );
}
