use super::*;
use crate::store::{OutboxKind, Received};
use serde_json::json;

async fn dispatcher(name: &str) -> (Dispatcher, Store, crate::testkit::TestDir) {
    let kit = crate::testkit::kit(&format!("dispatch-{name}")).await;
    (kit.dispatcher, kit.store, kit.dir)
}

/// Stores a command as the poller does, then dispatches it.
async fn submit(d: &Dispatcher, store: &Store, raw: Value) -> Dispatched {
    let incoming = Incoming::parse(raw.to_string()).unwrap();
    let received = Received {
        id: incoming.id.clone(),
        raw: incoming.raw.clone(),
    };
    store.receive(vec![received]).await.unwrap();
    d.dispatch(incoming).await.unwrap()
}

/// Waits (at most 30 s) until the outbox holds a result for each of `ids`; returns them in
/// the order of `ids`. Deferred answers and processes are stored by tasks of their own.
async fn results(store: &Store, ids: &[&str]) -> Vec<JobResult> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = store.outbox_take(OutboxKind::Result, 1000).await.unwrap();
        let stored: Vec<JobResult> = rows
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect();
        let found: Option<Vec<JobResult>> = ids
            .iter()
            .map(|id| stored.iter().find(|r| r.id == *id).cloned())
            .collect();
        if let Some(found) = found {
            return found;
        }
        tokio::time::timeout_at(deadline, store.outbox_added())
            .await
            .unwrap_or_else(|_| panic!("no results for all of {ids:?} within 30 s"));
    }
}

/// Dispatches a command and waits for its result.
async fn finished(d: &Dispatcher, store: &Store, raw: Value) -> JobResult {
    let id = raw["id"].as_str().unwrap().to_owned();
    submit(d, store, raw).await;
    results(store, &[&id]).await.remove(0)
}

/// [`finished`], with what the dispatcher said.
async fn answer(d: &Dispatcher, store: &Store, raw: Value) -> (Dispatched, JobResult) {
    let id = raw["id"].as_str().unwrap().to_owned();
    let dispatched = submit(d, store, raw).await;
    (dispatched, results(store, &[&id]).await.remove(0))
}

#[tokio::test]
async fn ping_is_answered_pong() {
    let (d, store, dir) = dispatcher("ping").await;
    let (done, r) = answer(
        &d,
        &store,
        json!({"id": "p", "gid": 1, "role": "web", "cmd": "ping"}),
    )
    .await;
    assert_eq!(done, Dispatched::Done);
    assert_eq!(
        (r.state, r.data, r.exit_code),
        (JobState::Ok, json!("pong"), None)
    );
    assert_eq!((r.gid, r.nid), (1, 2));
    assert_eq!(store.job_state("p").await.unwrap().as_deref(), Some("OK"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn restart_is_answered_then_requested() {
    let (d, store, dir) = dispatcher("restart").await;
    let (done, r) = answer(
        &d,
        &store,
        json!({"id": "r", "gid": 1, "nid": 2, "cmd": "restart"}),
    )
    .await;
    assert_eq!((done, r.state), (Dispatched::Restart, JobState::Ok));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn process_stats_of_an_unknown_job_are_an_error_not_silence() {
    let (d, store, dir) = dispatcher("procstats").await;
    let (_, r) = answer(
        &d,
        &store,
        json!({"id": "s", "gid": 1, "nid": 2, "cmd": "get_process_stats", "args": {"id": "x"}}),
    )
    .await;
    assert_eq!(
        (r.state, r.data, r.args),
        (
            JobState::Error,
            json!("no running job `x` on this agent"),
            json!({"id": "x"})
        )
    );
    let (_, r) = answer(
            &d,
            &store,
            json!({"id": "a", "gid": 1, "nid": 2, "cmd": "get_processes_stats", "args": {"domain": "ops"}}),
        )
        .await;
    assert_eq!((r.state, r.data), (JobState::Ok, json!([])));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn kill_and_killall_are_answered_by_the_supervisor() {
    let (d, store, dir) = dispatcher("kill").await;
    for raw in [
        json!({"id": "k", "gid": 1, "nid": 2, "cmd": "kill", "args": {"id": "nope"}}),
        json!({"id": "ka", "gid": 1, "nid": 2, "cmd": "killall"}),
    ] {
        assert_eq!(submit(&d, &store, raw).await, Dispatched::Done);
    }
    let answers = results(&store, &["k", "ka"]).await;
    let got: Vec<(&str, JobState, &Value)> = answers
        .iter()
        .map(|r| (r.id.as_str(), r.state, &r.data))
        .collect();
    assert_eq!(
        got,
        [
            (
                "k",
                JobState::Error,
                &json!("no running or queued job `nope` on this agent")
            ),
            ("ka", JobState::Ok, &json!({"killed": [], "remembered": []})),
        ]
    );
    assert_eq!(
        store.job_state("k").await.unwrap().as_deref(),
        Some("ERROR")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn host_facts_are_answered_by_a_task_of_their_own() {
    let (d, store, dir) = dispatcher("facts").await;
    let cmds = [
        "get_os_info",
        "get_cpu_info",
        "get_mem_info",
        "get_disk_info",
        "get_nic_info",
    ];
    for cmd in cmds {
        let raw = json!({"id": cmd, "gid": 1, "nid": 2, "cmd": cmd});
        assert_eq!(submit(&d, &store, raw).await, Dispatched::Done);
    }
    let answers = results(&store, &cmds).await;
    for r in &answers {
        assert_eq!(r.state, JobState::Ok, "{}: {}", r.id, r.data);
        assert!(r.data.is_object(), "{}: {}", r.id, r.data);
    }
    let os = answers.iter().find(|r| r.id == "get_os_info").unwrap();
    assert_eq!(os.data["os"], json!(std::env::consts::OS));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn unparsable_commands_with_an_id_get_an_error() {
    let (d, store, dir) = dispatcher("invalid").await;
    let (_, r) = answer(
        &d,
        &store,
        json!({"id": "b", "gid": 1, "nid": 2, "cmd": "fly"}),
    )
    .await;
    assert_eq!(
        (r.state, r.data, r.cmd.as_str()),
        (JobState::Error, json!("unknown command `fly`"), "fly")
    );
    assert!(Incoming::parse("{}".into()).is_err());
    assert!(Incoming::parse("not json".into()).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn a_jobs_messages_are_found_by_get_msgs_and_deleted_by_del_msgs() {
    let (d, store, dir) = dispatcher("msgs").await;
    let script =
        r#"echo plain; echo 3::hello; printf '20:::\n{"ok": true}\n:::\n'; echo 9::bad >&2"#;
    let run = json!({"id": "job", "gid": 1, "nid": 2, "cmd": "execute",
            "args": {"cmd": "sh", "args": ["-c", script], "domain": "ops", "name": "t"}});
    let r = finished(&d, &store, run).await;
    assert_eq!(
        (r.state, r.level, r.critical.as_str()),
        (JobState::Ok, 20, "bad")
    );
    assert_eq!(r.data, json!("{\"ok\": true}"));
    let get = json!({"id": "g", "gid": 1, "nid": 2, "cmd": "get_msgs", "args": {"jobid": "job", "levels": "3-30"}});
    let r = finished(&d, &store, get).await;
    let levels: Vec<u64> = r
        .data
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["level"].as_u64().unwrap())
        .collect();
    let mut sorted = levels.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [3, 9, 20], "{}", r.data);
    assert_eq!(r.data[0]["domain"], json!("ops"));
    let del = json!({"id": "x", "gid": 1, "nid": 2, "cmd": "del_msgs", "args": {"jobid": "job"}});
    let r = finished(&d, &store, del).await;
    assert_eq!((r.state, r.data), (JobState::Ok, json!(4)));
    std::fs::remove_dir_all(dir).unwrap();
}

/// 12 messages of 300 KB do not fit a 1 MiB result: `get_msgs` answers the newest that do,
/// and says that earlier ones were left out (issue 10 item 2).
#[cfg(unix)]
#[tokio::test]
async fn get_msgs_answers_what_fits_the_result_limit_and_says_so() {
    let (d, store, dir) = dispatcher("msgs-cut").await;
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do printf '5::%s:' $i; \
            head -c 300000 /dev/zero | tr '\\0' m; echo; done";
    let run = json!({"id": "big", "gid": 1, "nid": 2, "cmd": "execute",
            "args": {"cmd": "sh", "args": ["-c", script], "domain": "ops", "name": "t"}});
    assert_eq!(finished(&d, &store, run).await.state, JobState::Ok);
    let get = json!({"id": "g", "gid": 1, "nid": 2, "cmd": "get_msgs", "args": {"jobid": "big", "levels": "5"}});
    let r = finished(&d, &store, get).await;
    let rows = store.outbox_take(OutboxKind::Result, 1000).await.unwrap();
    let row = rows
        .iter()
        .find(|row| row.body.contains("\"get_msgs\""))
        .unwrap();
    assert!(
        row.body.len() <= crate::store::result_limit::RESULT_LIMIT,
        "{} bytes",
        row.body.len()
    );
    let messages = r.data.as_array().unwrap();
    assert!(
        (2..12).contains(&messages.len()),
        "{} messages",
        messages.len()
    );
    assert!(messages.last().unwrap()["data"]
        .as_str()
        .unwrap()
        .starts_with("12:mmm"));
    assert!(
        r.streams[1].contains("items were left out") && r.streams[1].contains("result limit 1 MiB"),
        "{}",
        r.streams[1]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_bad_loglevels_ends_the_job_before_it_starts() {
    let (d, store, dir) = dispatcher("badlevels").await;
    let run = json!({"id": "b", "gid": 1, "nid": 2, "cmd": "execute",
            "args": {"cmd": "true", "loglevels_ac": "1-"}});
    let r = finished(&d, &store, run).await;
    assert_eq!((r.state, r.exit_code), (JobState::Error, None));
    assert!(
        r.data.as_str().unwrap().starts_with("bad `loglevels_ac`"),
        "{}",
        r.data
    );
    let get = json!({"id": "g", "gid": 1, "nid": 2, "cmd": "get_msgs", "args": {"levels": "z"}});
    let r = finished(&d, &store, get).await;
    assert_eq!(r.state, JobState::Error);
    std::fs::remove_dir_all(dir).unwrap();
}
