//! Tests of the process manager with real processes (unix).

use super::*;
use crate::store::Received;
use crate::testkit::kit;
use serde_json::json;

#[tokio::test]
async fn echo_is_ok_with_its_output() {
    let f = kit("sup-echo").await;
    let r = f
        .run(
            "e",
            json!({"cmd": "echo", "args": ["hello", "world"]}),
            None,
        )
        .await;
    assert_eq!((r.state, r.exit_code), (JobState::Ok, Some(0)));
    assert_eq!(r.streams, ["hello world\n", ""]);
    assert_eq!((r.data, r.level, r.critical.as_str()), (json!(""), 0, ""));
    assert_eq!((r.gid, r.nid, r.cmd.as_str()), (1, 2, "execute"));
    assert_eq!(r.args["args"], json!(["hello", "world"]));
    assert!(r.starttime > 0);
    assert_eq!(f.store.job_state("e").await.unwrap().as_deref(), Some("OK"));
}

#[tokio::test]
async fn stream_tails_keep_the_last_lines() {
    let f = kit("sup-tail").await;
    let r = f
        .run(
            "t",
            json!({"cmd": "sh", "args": ["-c", "seq 1 1500; echo oops >&2"]}),
            None,
        )
        .await;
    let lines: Vec<&str> = r.streams[0].lines().collect();
    assert_eq!((lines.len(), lines[0], lines[999]), (1000, "501", "1500"));
    assert_eq!(r.streams[1], "oops\n");
}

#[tokio::test]
async fn a_nonzero_exit_is_an_error_with_its_code() {
    let f = kit("sup-exit3").await;
    let r = f
        .run("x", json!({"cmd": "sh", "args": ["-c", "exit 3"]}), None)
        .await;
    assert_eq!((r.state, r.exit_code), (JobState::Error, Some(3)));
}

#[tokio::test]
async fn stdin_data_reaches_the_process() {
    let f = kit("sup-stdin").await;
    let r = f
        .run(
            "s",
            json!({"cmd": "cat"}),
            Some(json!("line one\nline two")),
        )
        .await;
    assert_eq!(r.streams[0], "line one\nline two");
    let r = f
        .run("j", json!({"cmd": "cat"}), Some(json!({"a": [1, 2]})))
        .await;
    assert_eq!(r.streams[0], r#"{"a":[1,2]}"#);
    // Without data, stdin is empty rather than the agent's.
    let r = f.run("n", json!({"cmd": "cat"}), None).await;
    assert_eq!((r.state, r.streams[0].as_str()), (JobState::Ok, ""));
}

#[tokio::test]
async fn max_time_kills_the_whole_tree() {
    let f = kit("sup-timeout").await;
    let pidfile = f.dir.join("grandchild.pid");
    let script = format!("sleep 100 & echo $! > {}; sleep 100", pidfile.display());
    let r = f
        .run(
            "t",
            json!({"cmd": "sh", "args": ["-c", script], "max_time": 1}),
            None,
        )
        .await;
    assert_eq!(r.state, JobState::Timeout);
    assert_eq!(
        (r.exit_code, r.data),
        (None, json!("killed after max_time 1 s"))
    );
    assert!(r.time >= 1000 && r.time < 10_000, "{}", r.time);
    let grandchild = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    assert!(gone(&grandchild).await, "grandchild {grandchild} survived");
}

#[tokio::test]
async fn leftover_children_die_with_the_job() {
    let f = kit("sup-leftover").await;
    let pidfile = f.dir.join("child.pid");
    let script = format!("sleep 100 & echo $! > {}", pidfile.display());
    let r = f
        .run("l", json!({"cmd": "sh", "args": ["-c", script]}), None)
        .await;
    assert_eq!(r.state, JobState::Ok);
    let child = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    assert!(gone(&child).await, "child {child} survived");
}

/// Whether a process is gone (or a zombie waiting for init to reap it).
async fn gone(pid: &str) -> bool {
    for _ in 0..50 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}

#[tokio::test]
async fn a_missing_executable_is_named() {
    let f = kit("sup-missing").await;
    let r = f.run("m", json!({"cmd": "/no/such/binary"}), None).await;
    assert_eq!(r.state, JobState::Error);
    assert_eq!(r.data, json!("executable not found: /no/such/binary"));
    let r = f.run("p", json!({"cmd": "no-such-binary-xyz"}), None).await;
    assert_eq!(
        r.data,
        json!("executable `no-such-binary-xyz` not found on PATH")
    );
}

#[tokio::test]
async fn template_vars_and_workingdir_apply() {
    let f = kit("sup-templates").await;
    let args = json!({"cmd": "sh", "args": ["-c", "pwd; echo $0", "$agentroot:$root:$tmp"], "workingdir": "$agentroot"});
    let r = f.run("v", args, None).await;
    let dir = f.dir.display().to_string();
    let tmp = std::env::temp_dir().display().to_string();
    assert_eq!(r.streams[0], format!("{dir}\n{dir}:/opt/js:{tmp}\n"));
}

#[tokio::test]
async fn the_agents_own_settings_do_not_reach_a_job() {
    // Set for the whole test process: no other test reads this name.
    std::env::set_var("JSAGENT_TOKEN_FOR_THE_LEAK_TEST", "jsa_secret");
    let f = kit("sup-no-leak").await;
    let r = f
        .run(
            "leak",
            json!({"cmd": "sh", "args": ["-c", "env"], "env": {"MINE": "kept"}}),
            None,
        )
        .await;
    assert!(!r.streams[0].contains("jsa_secret"), "{}", r.streams[0]);
    assert!(!r.streams[0].contains("JSAGENT_"), "{}", r.streams[0]);
    assert!(r.streams[0].contains("MINE=kept"), "{}", r.streams[0]);
}

#[tokio::test]
async fn env_vars_reach_the_process() {
    let f = kit("sup-env").await;
    let r = f
        .run(
            "v",
            json!({"cmd": "sh", "args": ["-c", "echo $GREETING"], "env": {"GREETING": "hi"}}),
            None,
        )
        .await;
    assert_eq!(r.streams[0], "hi\n");
}

#[tokio::test]
async fn a_missing_workingdir_is_an_error() {
    let f = kit("sup-nowd").await;
    let r = f
        .run(
            "w",
            json!({"cmd": "true", "workingdir": "/no/such/dir"}),
            None,
        )
        .await;
    assert_eq!(
        (r.state, r.data),
        (
            JobState::Error,
            json!("working directory not found: /no/such/dir")
        )
    );
}

#[tokio::test]
async fn a_signal_exit_has_no_code() {
    let f = kit("sup-signal").await;
    let r = f
        .run(
            "k",
            json!({"cmd": "sh", "args": ["-c", "kill -9 $$"]}),
            None,
        )
        .await;
    assert_eq!(
        (r.state, r.exit_code, r.data),
        (JobState::Error, None, json!("killed by signal 9"))
    );
}

#[tokio::test]
async fn shutdown_kills_running_jobs_and_reports_them() {
    let f = kit("sup-shutdown").await;
    let raw = json!({"id": "long", "gid": 1, "nid": 2, "cmd": "execute", "args": {"cmd": "sleep", "args": ["100"]}});
    let (command, kind) = Command::parse(raw.to_string().as_bytes()).unwrap();
    let schemas::CommandKind::Execute(args) = kind else {
        panic!()
    };
    f.store
        .receive(vec![Received {
            id: "long".into(),
            raw: raw.to_string(),
        }])
        .await
        .unwrap();
    f.supervisor.submit(Job {
        command,
        args,
        program: Program::Executable,
        resume: None,
    });
    while f.store.job_state("long").await.unwrap().as_deref() != Some("RUNNING") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.supervisor.shutdown(Duration::from_secs(5)).await;
    let r = f.result("long").await;
    assert_eq!((r.state, r.data), (JobState::Error, json!(AGENT_STOPPED)));
}

#[test]
fn stdin_is_a_string_as_is_or_json() {
    assert_eq!(stdin_bytes(None), None);
    assert_eq!(stdin_bytes(Some(&Value::Null)), None);
    assert_eq!(stdin_bytes(Some(&json!("a\"b"))), Some(b"a\"b".to_vec()));
    assert_eq!(stdin_bytes(Some(&json!([1]))), Some(b"[1]".to_vec()));
}

/// Issue 12: a run's live output is in the outbox before its result, so the uploader (which
/// posts the output queued before a result first) delivers the lines no later than the result.
#[tokio::test]
async fn a_runs_live_output_is_queued_before_its_result() {
    let f = kit("sup-live").await;
    let script = "echo one; echo 3::two; echo three >&2";
    let r = f
        .run("l", json!({"cmd": "sh", "args": ["-c", script]}), None)
        .await;
    assert_eq!(r.state, JobState::Ok);
    let result_seq = f
        .store
        .outbox_take(crate::store::OutboxKind::Result, 10)
        .await
        .unwrap()[0]
        .seq;
    let rows = f
        .store
        .outbox_take(crate::store::OutboxKind::Output, 10)
        .await
        .unwrap();
    assert!(rows.iter().all(|row| row.seq < result_seq));
    let mut lines: Vec<(u8, u8, String)> = rows
        .iter()
        .flat_map(|row| {
            let batch: serde_json::Value = serde_json::from_str(&row.body).unwrap();
            let lines = batch["lines"].as_array().unwrap().clone();
            lines.into_iter().map(|l| {
                let n = |k: &str| l[k].as_u64().unwrap() as u8;
                (n("fd"), n("level"), l["line"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    lines.sort();
    let want = [(1, 1, "one"), (1, 3, "3::two"), (2, 2, "three")];
    let want: Vec<(u8, u8, String)> = want
        .iter()
        .map(|(f, l, t)| (*f, *l, (*t).to_owned()))
        .collect();
    assert_eq!(lines, want);
}
