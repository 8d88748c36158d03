//! The process manager end to end (issue 3): a long-running job outlives a `kill -9` of its
//! agent, and a recurring job posts each run while it stays `RUNNING`, across agent restarts.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tests::{command, execute, gone, processes_with, wait_for, Cluster};

const T: Duration = Duration::from_secs(60);

/// The pids written one per line to `path`.
fn pids(path: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn id_of(cmd: &Value) -> String {
    cmd["id"].as_str().expect("id").to_owned()
}

/// `kill`s a recurring job on agent 1:1; its final result (the one without `"final": false`).
fn kill_for_good(c: &Cluster, id: &str) -> Value {
    let kill = command(1, 1, "kill", json!({ "id": id }));
    assert_eq!(c.client.run(&kill, T)["state"], "OK");
    wait_for("the final result", T, || {
        c.client
            .results(id)
            .into_iter()
            .find(|r| r.get("final").is_none())
    })
}

#[test]
fn a_long_running_job_survives_kill9_of_its_agent_as_exactly_one_instance() {
    let mut c = Cluster::start(&[&[]]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (shells, children) = (dir.path().join("shells"), dir.path().join("children"));
    // `$0` and `$1` are the files: each start appends the shell's pid and its child's.
    let mut job = execute(
        1,
        1,
        "sh",
        &[
            "-c",
            "echo $$ >> \"$0\"; sleep 300 & echo $! >> \"$1\"; wait",
            &shells.display().to_string(),
            &children.display().to_string(),
        ],
    );
    job["args"]["max_time"] = json!(-1);
    let id = id_of(&job);
    c.client.push(&job);
    let first = wait_for("the first start", T, || {
        let (s, ch) = (pids(&shells), pids(&children));
        (s.len() == 1 && ch.len() == 1).then(|| (s[0], ch[0]))
    });
    assert!(!gone(first.0) && !gone(first.1));

    c.agents[0].kill9();
    c.agents[0].restart();
    let second = wait_for("the restart after the agent came back", T, || {
        let (s, ch) = (pids(&shells), pids(&children));
        (s.len() == 2 && ch.len() == 2).then(|| (s[1], ch[1]))
    });
    wait_for("the old tree gone", T, || {
        (gone(first.0) && gone(first.1)).then_some(())
    });
    assert!(!gone(second.0) && !gone(second.1), "{}", c.dump());
    let marker = shells.display().to_string();
    assert_eq!(
        processes_with(&marker),
        [second.0],
        "exactly one instance runs"
    );
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("RUNNING"));
    assert!(
        c.client.results(&id).is_empty(),
        "a long-running job posts when it stops"
    );

    let kill = command(1, 1, "kill", json!({ "id": id }));
    let answer = c.client.run(&kill, T);
    assert_eq!(answer["state"], "OK", "{answer}");
    let last = c.client.result(&id, T).expect("the final result");
    assert_eq!(
        (last["state"].clone(), last["run"].clone()),
        (json!("KILLED"), json!(2))
    );
    assert!(last.get("final").is_none(), "{last}");
    wait_for("the second tree gone", T, || {
        (gone(second.0) && gone(second.1)).then_some(())
    });
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("KILLED"));
}

#[test]
fn a_recurring_job_posts_every_run_and_keeps_counting_across_agent_restarts() {
    let mut c = Cluster::start(&[&[]]);
    let mut job = execute(1, 1, "echo", &["tick"]);
    job["args"]["recurring_period"] = json!(1);
    let id = id_of(&job);
    c.client.push(&job);
    let runs = |n: usize| {
        wait_for(&format!("{n} runs"), T, || {
            let results = c.client.results(&id);
            (results.len() >= n).then_some(results)
        })
    };
    let first = runs(2);
    for (i, r) in first.iter().enumerate() {
        assert_eq!(
            (r["run"].clone(), r["final"].clone()),
            (json!(i + 1), json!(false)),
            "{r}"
        );
        assert_eq!(r["state"], "OK");
        assert_eq!(r["streams"][0], "tick\n");
    }
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("RUNNING"));

    c.agents[0].kill9();
    c.agents[0].restart();
    let more = runs(first.len() + 2);
    let numbers: Vec<u64> = more
        .iter()
        .map(|r| r["run"].as_u64().expect("run"))
        .collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "runs are posted once each, in order");
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("RUNNING"));

    let last = kill_for_good(&c, &id);
    assert_eq!(last["state"], "KILLED", "{last}");
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("KILLED"));
}

/// Every run has a result: one cut by a `kill -9` of its agent is posted `ERROR`
/// "agent restarted" by the next agent, under its own number, and the count goes on after it.
#[test]
fn a_recurring_run_cut_by_kill9_of_its_agent_is_posted_as_an_error() {
    let mut c = Cluster::start(&[&[]]);
    let dir = tempfile::tempdir().expect("tempdir");
    let shells = dir.path().join("shells");
    // Each run appends its shell's pid to `$0`, then outlasts the test unless killed.
    let mut job = execute(
        1,
        1,
        "sh",
        &[
            "-c",
            "echo $$ >> \"$0\"; exec sleep 300",
            &shells.display().to_string(),
        ],
    );
    job["args"]["recurring_period"] = json!(1);
    let id = id_of(&job);
    c.client.push(&job);
    let first = wait_for("run 1 started", T, || pids(&shells).first().copied());

    c.agents[0].kill9();
    c.agents[0].restart();
    let cut = wait_for("the result of the cut run", T, || {
        c.client.results(&id).into_iter().next()
    });
    assert_eq!(
        (&cut["run"], &cut["final"], &cut["state"], &cut["data"]),
        (
            &json!(1),
            &json!(false),
            &json!("ERROR"),
            &json!("agent restarted")
        ),
        "{cut}"
    );
    wait_for("run 2 started", T, || {
        (pids(&shells).len() == 2).then_some(())
    });
    wait_for("run 1's process gone", T, || gone(first).then_some(()));

    let last = kill_for_good(&c, &id);
    assert_eq!(
        (&last["state"], &last["run"]),
        (&json!("KILLED"), &json!(2)),
        "{last}"
    );
    let runs: Vec<Value> = c
        .client
        .results(&id)
        .iter()
        .map(|r| r["run"].clone())
        .collect();
    assert_eq!(runs, [json!(1), json!(2)], "one result per run, in order");
}

#[test]
fn a_job_that_keeps_failing_is_given_up_with_an_alert_whatever_loglevels_ac_says() {
    let c = Cluster::start(&[&[]]);
    let mut job = execute(1, 1, "sh", &["-c", "exit 1"]);
    job["args"]["max_restart"] = json!(1);
    job["args"]["domain"] = json!("ops");
    job["args"]["name"] = json!("crashy");
    job["args"]["loglevels_ac"] = json!("1");
    let id = id_of(&job);
    let r = c.client.run(&job, T);
    assert_eq!(
        (r["state"].clone(), r["run"].clone()),
        (json!("ERROR"), json!(2)),
        "{r}"
    );
    let critical = r["critical"].as_str().expect("critical").to_owned();
    assert!(critical.contains("failed 2 times in a row"), "{critical}");
    let alert = wait_for("the alert in the alerts stream", T, || {
        c.client
            .stream("alerts")
            .into_iter()
            .find(|e| e.get("jobid") == Some(&id))
    });
    assert_eq!(alert.get("level").map(String::as_str), Some("9"));
    assert_eq!(alert.get("data"), Some(&critical));
    assert_eq!(alert.get("gid").map(String::as_str), Some("1"));
}
