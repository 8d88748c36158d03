use super::*;
use crate::testkit::TestDir;
use schemas::{JobResult, JobState};
use serde_json::Value;

fn received(id: &str) -> Received {
    Received {
        id: id.into(),
        raw: format!(r#"{{"id":"{id}","gid":1,"nid":1,"cmd":"ping"}}"#),
    }
}

fn result(id: &str) -> JobResult {
    JobResult::new(id, 1, 1, "ping", Value::Null, JobState::Ok)
}

#[tokio::test]
async fn a_seen_id_is_not_new_again() {
    let dir = TestDir::new("store-dedupe");
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    assert_eq!(
        store
            .receive(vec![received("a"), received("b")])
            .await
            .unwrap(),
        [true, true]
    );
    assert_eq!(
        store
            .receive(vec![received("b"), received("c")])
            .await
            .unwrap(),
        [false, true]
    );
    // Still seen once finished: a late redelivery must not run the job again.
    store.finish(&result("a")).await.unwrap();
    assert_eq!(store.receive(vec![received("a")]).await.unwrap(), [false]);
}

#[tokio::test]
async fn outbox_is_read_in_order_and_deleted_by_seq() {
    let dir = TestDir::new("store-outbox");
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    for id in ["r1", "r2", "r3"] {
        store.finish(&result(id)).await.unwrap();
    }
    let rows = store.outbox_take(OutboxKind::Result, 2).await.unwrap();
    let ids: Vec<String> = rows.iter().map(|r| body_id(&r.body)).collect();
    assert_eq!(ids, ["r1", "r2"]);
    store.outbox_delete(vec![rows[0].seq]).await.unwrap();
    let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
    let ids: Vec<String> = rows.iter().map(|r| body_id(&r.body)).collect();
    assert_eq!(ids, ["r2", "r3"]);
}

fn body_id(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn finishing_ends_the_job_and_queues_its_result_together() {
    let dir = TestDir::new("store-finish");
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    store.receive(vec![received("j")]).await.unwrap();
    let started = Started {
        started_ms: 5,
        pid: 42,
        pid_start_time: Some(7),
    };
    store.start("j", started).await.unwrap();
    assert_eq!(
        store.job_state("j").await.unwrap().as_deref(),
        Some("RUNNING")
    );
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(
        (unfinished[0].pid, unfinished[0].pid_start_time),
        (Some(42), Some(7))
    );

    store
        .finish(&JobResult::error("j", 1, 1, "execute", Value::Null, "boom"))
        .await
        .unwrap();
    assert_eq!(
        store.job_state("j").await.unwrap().as_deref(),
        Some("ERROR")
    );
    assert!(store.unfinished().await.unwrap().is_empty());
    assert_eq!(
        store
            .outbox_take(OutboxKind::Result, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // The uploader is woken.
    tokio::time::timeout(Duration::from_secs(1), store.outbox_added())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_finish_changes_nothing() {
    let dir = TestDir::new("store-atomic");
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    store.receive(vec![received("j")]).await.unwrap();
    store
        .start(
            "j",
            Started {
                started_ms: 1,
                pid: 1,
                pid_start_time: None,
            },
        )
        .await
        .unwrap();
    // Make the outbox insert fail inside the transaction.
    store
            .call(|conn| Ok(conn.execute_batch("CREATE TRIGGER no_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'full'); END;")?))
            .await
            .unwrap();
    assert!(store.finish(&result("j")).await.is_err());
    assert_eq!(
        store.job_state("j").await.unwrap().as_deref(),
        Some("RUNNING")
    );
}

/// Live output batches take their row's `seq` as theirs: it must only grow, also once the
/// outbox was emptied and the database opened again (a reused rowid would make the controller
/// drop the batch as already appended).
#[tokio::test]
async fn outbox_seqs_only_grow_across_an_emptied_table_and_a_reopen() {
    let dir = TestDir::new("store-seq");
    let body = || vec![r#"{"id":"j","lines":[]}"#.to_owned(); 2];
    let first = {
        let store = Store::open(&dir.join("agent.db")).await.unwrap();
        let seqs = store
            .outbox_push_numbered(OutboxKind::Output, body())
            .await
            .unwrap();
        assert!(seqs[0] < seqs[1]);
        let rows = store.outbox_take(OutboxKind::Output, 10).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
        store.outbox_delete(seqs.clone()).await.unwrap();
        assert_eq!(store.outbox_oldest(OutboxKind::Output).await.unwrap(), None);
        seqs[1]
    };
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    let again = store
        .outbox_push_numbered(OutboxKind::Output, body())
        .await
        .unwrap();
    assert!(again[0] > first, "{again:?} after {first}");
    assert_eq!(
        store.outbox_oldest(OutboxKind::Output).await.unwrap(),
        Some(again[0])
    );
    // One call deletes what was settled and picks the next batch: a turn's kind, or results
    // after the output queued before them.
    let seqs = |rows: &[crate::store::OutboxRow]| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    let next = store
        .outbox_next(
            vec![again[0]],
            vec![OutboxKind::Stats, OutboxKind::Output],
            10,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.kind, next.turn), (OutboxKind::Output, true));
    assert_eq!(seqs(&next.rows), [again[1]]);
    store
        .outbox_push(OutboxKind::Result, vec![r#"{"id":"j"}"#.to_owned()])
        .await
        .unwrap();
    let next = store
        .outbox_next(vec![], vec![], 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.kind, next.turn), (OutboxKind::Output, false));
    assert_eq!(seqs(&next.rows), [again[1]]);
    let next = store
        .outbox_next(vec![again[1]], vec![], 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.kind, next.turn), (OutboxKind::Result, false));
    let last = seqs(&next.rows);
    assert_eq!(
        store
            .outbox_next(last, vec![OutboxKind::Output], 10)
            .await
            .unwrap()
            .map(|n| n.kind),
        None
    );
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = TestDir::new("store-reopen");
    {
        let store = Store::open(&dir.join("agent.db")).await.unwrap();
        store
            .receive(vec![received("q"), received("done")])
            .await
            .unwrap();
        store.finish(&result("done")).await.unwrap();
    }
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(
        (unfinished[0].id.as_str(), unfinished[0].state.as_str()),
        ("q", "QUEUED")
    );
    assert_eq!(
        store
            .outbox_take(OutboxKind::Result, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.receive(vec![received("done")]).await.unwrap(),
        [false]
    );
}

#[tokio::test]
async fn a_run_result_records_its_run_as_posted() {
    let dir = TestDir::new("store-run-posted");
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    store.receive(vec![received("r")]).await.unwrap();
    store.starting("r", 3).await.unwrap();
    let unposted = store.unfinished().await.unwrap();
    assert_eq!((unposted[0].runs, unposted[0].runs_posted), (3, 0));

    let mut run = result("r");
    run.run = 3;
    run.is_final = false;
    store.run_result(&run).await.unwrap();
    let posted = store.unfinished().await.unwrap();
    assert_eq!((posted[0].runs, posted[0].runs_posted), (3, 3));
    assert_eq!(
        posted[0].state, "RUNNING",
        "a run result does not end the job"
    );
    let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
}

/// A database made by the first agents (no `runs`, no `runs_posted`) opens, keeps its jobs
/// and gains the columns.
#[tokio::test]
async fn a_database_of_an_older_agent_is_migrated() {
    let dir = TestDir::new("store-migrate");
    {
        let conn = Connection::open(dir.join("agent.db")).unwrap();
        conn.execute_batch(
                "CREATE TABLE jobs (id TEXT PRIMARY KEY, command TEXT NOT NULL, state TEXT NOT NULL,
                    received_ms INTEGER NOT NULL, started_ms INTEGER, pid INTEGER,
                    pid_start_time INTEGER, finished INTEGER);
                 INSERT INTO jobs (id, command, state, received_ms) VALUES ('old', '{}', 'QUEUED', 1);",
            )
            .unwrap();
    }
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(
        (
            unfinished[0].id.as_str(),
            unfinished[0].runs,
            unfinished[0].runs_posted
        ),
        ("old", 0, 0)
    );
    store.starting("old", 1).await.unwrap();
    assert_eq!(store.unfinished().await.unwrap()[0].runs, 1);
}

#[tokio::test]
async fn prune_forgets_only_old_finished_jobs() {
    let dir = TestDir::new("store-prune");
    let store = Store::open(&dir.join("agent.db")).await.unwrap();
    store
        .receive(vec![received("old"), received("running")])
        .await
        .unwrap();
    store.finish(&result("old")).await.unwrap();
    assert_eq!(store.prune(schemas::now_ms() + 1000).await.unwrap(), 1);
    assert_eq!(store.job_state("old").await.unwrap(), None);
    assert_eq!(
        store.job_state("running").await.unwrap().as_deref(),
        Some("QUEUED")
    );
}
