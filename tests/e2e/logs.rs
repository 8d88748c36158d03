//! Logs end to end (issue 4): a job's levelled output stored by its agent, answered by
//! `get_msgs`/`del_msgs`, forwarded into `log.<domain>.<name>` and `alerts` once each — through
//! a controller outage too — and a million lines stored without losing one.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tests::{command, execute, wait_for, Cluster, ControllerOpts};

const T: Duration = Duration::from_secs(60);

fn shell(script: &str, domain: &str, name: &str) -> Value {
    let mut cmd = execute(1, 1, "sh", &["-c", script]);
    cmd["args"]["domain"] = json!(domain);
    cmd["args"]["name"] = json!(name);
    cmd
}

/// Rows of one agent log file, as (id, data), in id order.
///
/// A read-only reader can fail for a moment while the agent writes: when the agent's rollback
/// journal (rotation switches journal modes) vanishes between SQLite's two looks at it, the
/// reader takes it for a hot journal it may not roll back (`SQLITE_READONLY_ROLLBACK`, SQLite
/// ticket #3883). Callers retry.
fn try_rows(db: &Path) -> rusqlite::Result<Vec<(i64, String)>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT id, data FROM logs ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// [`try_rows`], retried until it reads.
fn rows(db: &Path) -> Vec<(i64, String)> {
    wait_for(&format!("a read of {}", db.display()), T, || {
        try_rows(db).ok()
    })
}

#[test]
fn levels_are_stored_forwarded_and_answered() {
    let c = Cluster::start(&[&[]]);
    let script = "echo plain; echo 3::for users; echo 8::ops error >&2; \
                  printf '20:::\\n{\"n\": 1}\\n:::\\n'; echo 9::critical; echo 7::careful";
    let cmd = shell(script, "ops", "levels");
    let id = cmd["id"].as_str().expect("id").to_owned();
    let r = c.client.run(&cmd, T);
    assert_eq!(r["state"], "OK", "{r}");
    assert_eq!(
        (r["data"].as_str(), r["level"].as_u64()),
        (Some("{\"n\": 1}"), Some(20))
    );
    assert_eq!(r["critical"], "critical");

    // Default loglevels_ac 7,8,9: forwarded with gid and nid; 8 and 9 to alerts too.
    let got = wait_for("3 forwarded messages", T, || {
        let s = c.client.stream("log.ops.levels");
        (s.len() == 3).then_some(s)
    });
    let mut levels: Vec<&str> = got.iter().map(|m| m["level"].as_str()).collect();
    levels.sort_unstable();
    assert_eq!(
        levels,
        ["7", "8", "9"],
        "only the loglevels_ac levels are forwarded"
    );
    for m in &got {
        assert_eq!((m["gid"].as_str(), m["nid"].as_str()), ("1", "1"));
        assert_eq!(
            (m["jobid"].as_str(), m["domain"].as_str()),
            (id.as_str(), "ops")
        );
    }
    let alerts = wait_for("2 alerts", T, || {
        let s = c.client.stream("alerts");
        (s.len() == 2).then_some(s)
    });
    let mut alerted: Vec<&str> = alerts.iter().map(|m| m["data"].as_str()).collect();
    alerted.sort_unstable();
    assert_eq!(alerted, ["critical", "ops error"]);

    // Everything is stored: get_msgs by job and level, then del_msgs.
    let get = command(1, 1, "get_msgs", json!({"jobid": id, "levels": "1-3"}));
    let r = c.client.run(&get, T);
    let data: Vec<&str> = r["data"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["data"].as_str())
        .collect();
    assert_eq!(data, ["plain", "for users"], "{r}");
    let del = command(1, 1, "del_msgs", json!({"jobid": id}));
    assert_eq!(c.client.run(&del, T)["data"], json!(6));
    let r = c
        .client
        .run(&command(1, 1, "get_msgs", json!({"jobid": id})), T);
    assert_eq!(r["data"], json!([]));
}

#[test]
fn a_batch_posted_twice_is_appended_once() {
    let c = Cluster::start_with(
        &[&[]],
        ControllerOpts {
            insecure_http: true,
            ..Default::default()
        },
    );
    let agent = &c.agents[0];
    let message = |id: u64, level: u8| json!({"id": id, "jobid": "j", "domain": "dup", "name": "x", "epoch": 1, "level": level, "data": format!("m{id}")});
    let body = json!([[message(1, 1), message(2, 8)], message(3, 1)]);
    let url = format!("{}/v1/agents/1/1/logs", c.controller.url());
    let post = |body: &Value| -> Value {
        let r = c
            .controller
            .http()
            .post(&url)
            .bearer_auth(agent.token().trim())
            .json(body)
            .send()
            .expect("post");
        assert!(r.status().is_success(), "{}", r.status());
        r.json().expect("JSON answer")
    };
    assert_eq!(
        post(&body),
        json!({"stored": 3, "duplicates": 0, "rejected": 0})
    );
    assert_eq!(
        post(&body),
        json!({"stored": 0, "duplicates": 3, "rejected": 0})
    );
    let answer = post(&json!([message(4, 1), {"id": "x"}]));
    assert_eq!(
        (answer["stored"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let data: Vec<String> = c
        .client
        .stream("log.dup.x")
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, ["m1", "m2", "m3", "m4"]);
    assert_eq!(c.client.stream("alerts").len(), 1);
    // Another agent's token cannot post as this one.
    let r = c
        .controller
        .http()
        .post(&url)
        .json(&body)
        .send()
        .expect("post");
    assert_eq!(r.status(), 401);
}

#[test]
fn forwarded_messages_survive_a_controller_outage_and_arrive_once() {
    let mut c = Cluster::start(&[&[]]);
    let script = "for i in $(seq 1 40); do echo \"8::tick $i\"; sleep 1; done";
    let cmd = shell(script, "ops", "outage");
    let id = cmd["id"].as_str().expect("id").to_owned();
    c.client.push(&cmd);
    wait_for("first ticks forwarded", T, || {
        (c.client.stream("log.ops.outage").len() >= 2).then_some(())
    });
    c.controller.kill9();
    std::thread::sleep(Duration::from_secs(30));
    c.controller.restart();
    let r = c
        .client
        .result(&id, Duration::from_secs(120))
        .unwrap_or_else(|| panic!("no result\n{}", c.dump()));
    assert_eq!(r["state"], "OK", "{r}");
    let ticks = wait_for("40 ticks", Duration::from_secs(90), || {
        let s = c.client.stream("log.ops.outage");
        (s.len() >= 40).then_some(s)
    });
    let data: Vec<String> = ticks.iter().map(|m| m["data"].clone()).collect();
    let want: Vec<String> = (1..=40).map(|i| format!("tick {i}")).collect();
    assert_eq!(data, want, "each message once, in order");
    let alerts = c.client.stream("alerts");
    assert_eq!(alerts.len(), 40);
}

#[test]
fn a_million_lines_are_all_stored_in_order() {
    let c = Cluster::start(&[&[]]);
    let cmd = shell("seq 1 1000000", "flood", "seq");
    let r = c.client.run(&cmd, Duration::from_secs(300));
    assert_eq!(r["state"], "OK", "{r}");
    // About 110 MB of rows: the default 100 MB rotates once; read every file, oldest first.
    let logs = c.agents[0].data_dir().join("logs");
    let stored = wait_for("1,000,000 rows", Duration::from_secs(120), || {
        let mut files: Vec<_> = std::fs::read_dir(&logs)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.retain(|p| p.extension().is_some_and(|e| e == "db"));
        files.sort_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        });
        // A file read while the agent rotates reads short, or fails; the next look is whole.
        let mut all: Vec<(i64, String)> = Vec::new();
        for file in &files {
            all.extend(try_rows(file).ok()?);
        }
        (all.len() >= 1_000_000).then_some(all)
    });
    assert_eq!(stored.len(), 1_000_000);
    assert!(stored.windows(2).all(|w| w[0].0 < w[1].0), "ids increase");
    for (i, (_, data)) in stored.iter().enumerate() {
        assert_eq!(data, &(i + 1).to_string(), "row {i}");
    }
}

#[test]
fn full_log_files_rotate_and_get_msgs_reads_the_rotated_ones() {
    let c = Cluster::start_configured("log_db_max_size = 1000000\nlog_db_keep = 2\n");
    let logs = c.agents[0].data_dir().join("logs");
    let rotated = || -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(&logs)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n != "current.db" && n.ends_with(".db"))
        });
        files
    };

    // A marker, then enough lines to rotate the file exactly once: a row takes about 160 bytes,
    // so 9,000 make about 1.45 MB — at least one full file, never two, however the agent
    // batches its writes (it checks the size after each batch). With more, the file holding the
    // marker could be pruned (log_db_keep = 2) before get_msgs looks.
    let first = shell("echo 3::the marker; seq 1 9000", "rot", "a");
    let first_id = first["id"].as_str().expect("id").to_owned();
    assert_eq!(c.client.run(&first, T)["state"], "OK");
    wait_for("a rotated file", T, || {
        (!rotated().is_empty()).then_some(())
    });
    let get = command(1, 1, "get_msgs", json!({"jobid": first_id, "levels": "3"}));
    let r = c.client.run(&get, T);
    assert_eq!(r["data"][0]["data"], "the marker", "{r}");
    let in_current = rows(&logs.join("current.db"))
        .iter()
        .any(|(_, d)| d == "the marker");
    assert!(!in_current, "the marker was found in a rotated file");

    // Many more rotations: only log_db_keep files are kept.
    let second = shell("seq 1 300000", "rot", "b");
    assert_eq!(
        c.client.run(&second, Duration::from_secs(120))["state"],
        "OK"
    );
    let get = command(1, 1, "get_msgs", json!({"levels": "1"}));
    let r = c.client.run(&get, T);
    let last = r["data"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["data"], "300000", "the newest message is found");
    let files = rotated();
    assert!(!files.is_empty() && files.len() <= 2, "{files:?}");
}
