use super::*;
use crate::store::{OutboxKind, Received, Started};
use schemas::JobState;
use serde_json::json;

#[tokio::test]
async fn running_jobs_end_and_their_trees_die_queued_jobs_run() {
    let crate::testkit::Kit {
        dir,
        store,
        dispatcher,
        supervisor,
        ..
    } = crate::testkit::kit("recovery").await;

    // A "previous agent's" job process, in its own group, still running.
    let mut orphan = std::process::Command::new("sleep");
    std::os::unix::process::CommandExt::process_group(&mut orphan, 0);
    let mut orphan = orphan.arg("100").spawn().unwrap();
    let pid = orphan.id();
    let raw = |id: &str, cmd: &str| json!({"id": id, "gid": 1, "nid": 2, "cmd": cmd}).to_string();
    let received = ["running", "stale", "queued"].map(|id| Received {
        id: id.into(),
        raw: raw(id, "ping"),
    });
    store.receive(received.to_vec()).await.unwrap();
    store
        .start(
            "running",
            Started {
                started_ms: 1,
                pid,
                pid_start_time: process::start_time(pid),
            },
        )
        .await
        .unwrap();
    // Same pid, different start time: some other process now; must not be killed.
    store
        .start(
            "stale",
            Started {
                started_ms: 1,
                pid: std::process::id(),
                pid_start_time: Some(1),
            },
        )
        .await
        .unwrap();

    let recovered = recover(&store, &dispatcher, &supervisor).await.unwrap();
    assert_eq!(
        recovered,
        Recovered {
            ended: 2,
            killed: 1,
            resumed: 1
        }
    );
    let status = orphan.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the orphan was not killed: {status}"
    );

    let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
    let results: Vec<JobResult> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let by_id = |id: &str| results.iter().find(|r| r.id == id).unwrap().clone();
    assert_eq!(
        (by_id("running").state, by_id("running").data),
        (JobState::Error, json!(AGENT_RESTARTED))
    );
    assert_eq!(by_id("stale").state, JobState::Error);
    assert_eq!(
        (by_id("queued").state, by_id("queued").data),
        (JobState::Ok, json!("pong"))
    );
    assert!(store.unfinished().await.unwrap().is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Regression: a job killed between being marked starting and being spawned ran twice,
/// because it was still QUEUED and recovery started it again.
#[tokio::test]
async fn a_job_marked_starting_is_never_started_again() {
    let crate::testkit::Kit {
        dir,
        store,
        dispatcher,
        supervisor,
        ..
    } = crate::testkit::kit("recovery-starting").await;
    let marker = dir.join("ran");
    let raw = json!({"id": "half", "gid": 1, "nid": 2, "cmd": "execute",
            "args": {"cmd": "sh", "args": ["-c", format!("touch {}", marker.display())]}});
    store
        .receive(vec![Received {
            id: "half".into(),
            raw: raw.to_string(),
        }])
        .await
        .unwrap();
    store.starting("half", 1).await.unwrap();

    recover(&store, &dispatcher, &supervisor).await.unwrap();
    let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
    let result: JobResult = serde_json::from_str(&rows[0].body).unwrap();
    assert_eq!(
        (result.state, result.data),
        (JobState::Error, json!(AGENT_RESTARTED))
    );
    assert!(!marker.exists(), "the job ran again after the restart");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A recurring job whose run 2 started but never posted (the agent died during it) gets a
/// result for run 2 and comes back; a job whose last run posted gets none. (That the count
/// then goes on from 3 is the e2e test `supervised::a_recurring_run_cut_by_kill9…`.)
#[tokio::test]
async fn a_recurring_run_cut_by_the_agents_death_is_posted_as_an_error() {
    let crate::testkit::Kit {
        dir,
        store,
        dispatcher,
        supervisor,
        ..
    } = crate::testkit::kit("recovery-cut-run").await;
    let raw = |id: &str| {
        json!({"id": id, "gid": 1, "nid": 2, "cmd": "execute",
                "args": {"cmd": "true", "recurring_period": 3600}})
        .to_string()
    };
    let received = ["cut", "posted"].map(|id| Received {
        id: id.into(),
        raw: raw(id),
    });
    store.receive(received.to_vec()).await.unwrap();
    for id in ["cut", "posted"] {
        store.starting(id, 1).await.unwrap();
        let mut first = dispatcher.error_for_raw(id, &raw(id), "run 1");
        (first.run, first.is_final) = (1, false);
        store.run_result(&first).await.unwrap();
    }
    store.starting("cut", 2).await.unwrap();
    let taken = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
    store
        .outbox_delete(taken.iter().map(|r| r.seq).collect())
        .await
        .unwrap();

    let recovered = recover(&store, &dispatcher, &supervisor).await.unwrap();
    assert_eq!(recovered.resumed, 2);
    let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
    let results: Vec<JobResult> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(results.len(), 1, "{results:?}");
    let cut = &results[0];
    assert_eq!(
        (cut.id.as_str(), cut.run, cut.is_final, cut.state),
        ("cut", 2, false, JobState::Error)
    );
    assert_eq!(cut.data, json!(AGENT_RESTARTED));
    // Recovery again (another restart before run 3): run 2 is not posted twice.
    let unfinished = store.unfinished().await.unwrap();
    assert!(
        unfinished.iter().all(|j| j.runs == j.runs_posted),
        "{unfinished:?}"
    );
    supervisor.shutdown(std::time::Duration::from_secs(5)).await;
    std::fs::remove_dir_all(dir).unwrap();
}
