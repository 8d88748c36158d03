//! Cron schedules end to end (issue 14): a command with `args.cron` runs numbered runs at its
//! times, each posting its own result to `cmds_queue_<id>` while the job stays `RUNNING`, until
//! it is killed; a bad expression or zone is refused at routing with an `ERROR` naming the field.

use std::time::Duration;

use serde_json::{json, Value};
use tests::{command, execute, wait_for, Cluster};

const T: Duration = Duration::from_secs(60);

#[test]
fn a_cron_job_posts_numbered_runs_until_killed() {
    let c = Cluster::start(&[&[]]);
    let mut job = execute(1, 1, "echo", &["tick"]);
    // Every second (6 fields, seconds first), in a zone other than UTC.
    job["args"]["cron"] = json!("* * * * * *");
    job["args"]["tz"] = json!("Europe/Berlin");
    let id = job["id"].as_str().expect("id").to_owned();
    c.client.push(&job);
    let runs = wait_for("3 runs", T, || {
        let results = c.client.results(&id);
        (results.len() >= 3).then_some(results)
    });
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(
            (r["run"].clone(), r["final"].clone(), r["state"].clone()),
            (json!(i + 1), json!(false), json!("OK")),
            "{r}"
        );
        assert_eq!(r["streams"][0], "tick\n");
    }
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("RUNNING"));

    let kill = command(1, 1, "kill", json!({ "id": id }));
    assert_eq!(c.client.run(&kill, T)["state"], "OK");
    let last = wait_for("the final result", T, || {
        c.client
            .results(&id)
            .into_iter()
            .find(|r| r.get("final").is_none())
    });
    assert_eq!(last["state"], "KILLED", "{last}");
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("KILLED"));
}

#[test]
fn a_bad_cron_expression_or_zone_is_an_error_naming_the_field() {
    let c = Cluster::start(&[&[]]);
    let bad = |args: Value, why: &str| {
        let mut job = execute(1, 1, "echo", &["tick"]);
        for (k, v) in args.as_object().expect("args") {
            job["args"][k] = v.clone();
        }
        let r = c.client.run(&job, T);
        assert_eq!(r["state"], "ERROR", "{r}");
        let data = r["data"].as_str().unwrap_or_default();
        assert!(data.contains(why), "{why:?} not in {data:?}");
    };
    bad(
        json!({"cron": "*/5 * *"}),
        "args.cron: `*/5 * *` is not a cron expression",
    );
    bad(
        json!({"cron": "* * * * *", "tz": "Mars/Base"}),
        "args.tz: `Mars/Base` is not an IANA time zone",
    );
    bad(json!({"tz": "UTC"}), "args.tz is given without args.cron");
    bad(
        json!({"cron": "* * * * *", "recurring_period": 5}),
        "args.cron and args.recurring_period",
    );
}
