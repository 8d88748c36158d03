use super::*;

fn line(text: &str) -> OutputLine {
    OutputLine {
        fd: 1,
        level: 1,
        line: text.to_owned(),
        time: 1,
    }
}

async fn rows(store: &Store) -> Vec<(String, usize)> {
    let rows = store.outbox_take(OutboxKind::Output, 1000).await.unwrap();
    rows.iter()
        .map(|r| {
            let batch: schemas::OutputBatch =
                serde_json::from_str(&with_seq(r.seq, &r.body).unwrap()).unwrap();
            assert_eq!(batch.seq, r.seq as u64);
            (batch.id, batch.lines.len())
        })
        .collect()
}

fn start(store: &Store) -> mpsc::Sender<Op> {
    let (tx, rx) = mpsc::channel(8);
    let queued = Arc::new(AtomicUsize::new(0));
    tokio::spawn(LiveForwarder::new(store.clone(), rx, queued, StoppedJobs::default()).run());
    tx
}

async fn end(tx: &mpsc::Sender<Op>, job: &str) {
    let (done, stored) = oneshot::channel();
    let op = Op::End {
        job: job.into(),
        lines: Vec::new(),
        unsent: 0,
        done,
    };
    tx.send(op).await.unwrap();
    stored.await.unwrap();
}

/// A job's pending lines never exceed a row: the forwarder's memory is bounded per job.
#[tokio::test]
async fn a_row_holds_at_most_its_lines_and_the_end_writes_the_rest() {
    let kit = crate::testkit::kit("live-rows").await;
    let tx = start(&kit.store);
    let many: Vec<OutputLine> = (0..2500).map(|i| line(&i.to_string())).collect();
    let op = Op::Lines {
        job: "a".into(),
        lines: many,
        cost: 0,
    };
    tx.send(op).await.unwrap();
    let other = Op::Lines {
        job: "b".into(),
        lines: vec![line("b")],
        cost: 0,
    };
    tx.send(other).await.unwrap();
    end(&tx, "a").await;
    assert_eq!(
        rows(&kit.store).await,
        [
            ("a".into(), ROW_LINES),
            ("a".into(), ROW_LINES),
            ("a".into(), 500)
        ]
    );
    let big = "x".repeat(100 << 10);
    let op = Op::Lines {
        job: "c".into(),
        lines: vec![line(&big), line(&big), line(&big)],
        cost: 0,
    };
    tx.send(op).await.unwrap();
    end(&tx, "c").await;
    let got = rows(&kit.store).await;
    assert_eq!(
        got[3..],
        [("c".into(), 3)],
        "256 KiB reached at the third line"
    );
    // Job b is still pending; a flush writes it.
    let (done, flushed) = oneshot::channel();
    tx.send(Op::Flush(done)).await.unwrap();
    flushed.await.unwrap();
    assert_eq!(rows(&kit.store).await.last().unwrap(), &("b".into(), 1));
}

async fn lines(tx: &mpsc::Sender<Op>, job: &str, texts: &[&str]) {
    let op = Op::Lines {
        job: job.into(),
        lines: texts.iter().map(|t| line(t)).collect(),
        cost: 0,
    };
    tx.send(op).await.unwrap();
}

async fn texts(store: &Store) -> Vec<Vec<String>> {
    let rows = store.outbox_take(OutboxKind::Output, 1000).await.unwrap();
    rows.iter()
        .map(|r| {
            let body = with_seq(r.seq, &r.body).unwrap();
            let batch: schemas::OutputBatch = serde_json::from_str(&body).unwrap();
            batch.lines.into_iter().map(|l| l.line).collect()
        })
        .collect()
}

/// The controller takes nothing for a while: past the backlog bound lines are only counted,
/// and once it took the earlier output, a marker line says how many were not forwarded.
#[tokio::test(start_paused = true)]
async fn over_the_backlog_bound_lines_are_counted_then_reported() {
    let kit = crate::testkit::kit("live-backlog").await;
    let (tx, rx) = mpsc::channel(8);
    let mut forwarder = LiveForwarder::new(
        kit.store.clone(),
        rx,
        Arc::new(AtomicUsize::new(0)),
        StoppedJobs::default(),
    );
    forwarder.backlog_limit = 1000;
    tokio::spawn(forwarder.run());
    let long = "x".repeat(1000);
    lines(&tx, "a", &[long.as_str()]).await;
    end(&tx, "a").await;
    // Over the bound now: these are counted, and the end of the run says so.
    lines(&tx, "a", &["1", "2", "3"]).await;
    end(&tx, "a").await;
    let marker =
        "[jsagent] 3 lines not forwarded: the controller has not taken the earlier output yet";
    assert_eq!(
        texts(&kit.store).await,
        [vec![long.clone()], vec![marker.to_owned()]]
    );
    // The uploader delivered them; the bound is looked at again a little later.
    let rows = kit.store.outbox_take(OutboxKind::Output, 10).await.unwrap();
    kit.store
        .outbox_delete(rows.iter().map(|r| r.seq).collect())
        .await
        .unwrap();
    tokio::time::sleep(BACKLOG_CHECK).await;
    lines(&tx, "a", &["4"]).await;
    end(&tx, "a").await;
    assert_eq!(texts(&kit.store).await, [vec!["4".to_owned()]]);
}

#[test]
fn the_backlog_forgets_what_was_delivered() {
    let mut backlog = Backlog::default();
    backlog.written([(3, 10), (5, 20), (9, 30)]);
    assert_eq!(backlog.bytes, 60);
    backlog.delivered_before(Some(5));
    assert_eq!(backlog.bytes, 50);
    backlog.delivered_before(Some(10));
    assert_eq!(backlog.bytes, 0);
    backlog.written([(11, 7)]);
    backlog.delivered_before(None);
    assert_eq!((backlog.bytes, backlog.rows.len()), (0, 0));
}

#[test]
fn a_row_becomes_a_batch_with_its_seq() {
    let body = batch_body("job-1", &[line("hi")]);
    let batch: schemas::OutputBatch = serde_json::from_str(&with_seq(42, &body).unwrap()).unwrap();
    assert_eq!(
        batch,
        schemas::OutputBatch {
            id: "job-1".into(),
            seq: 42,
            lines: vec![line("hi")]
        }
    );
    assert_eq!(with_seq(1, "[]"), None);
}

/// Review finding: the backlog bound started empty at every start, so each restart during a
/// long outage allowed another 64 MiB. It starts from the output rows left in the outbox.
#[tokio::test]
async fn the_backlog_starts_from_the_output_rows_left_by_an_earlier_run() {
    let kit = crate::testkit::kit("live-backlog-restart").await;
    let left = batch_body("old", &[line(&"x".repeat(600))]);
    kit.store
        .outbox_push(OutboxKind::Output, vec![left.clone(), left.clone()])
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut forwarder = LiveForwarder::new(
        kit.store.clone(),
        rx,
        Arc::new(AtomicUsize::new(0)),
        StoppedJobs::default(),
    );
    forwarder.backlog_limit = 1000;
    tokio::spawn(forwarder.run());
    lines(&tx, "a", &["1", "2"]).await;
    end(&tx, "a").await;
    let marker =
        "[jsagent] 2 lines not forwarded: the controller has not taken the earlier output yet";
    let got = texts(&kit.store).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2], [marker]);
}

fn lines_op(job: &str, texts: &[&str]) -> Op {
    Op::Lines {
        job: job.into(),
        lines: texts.iter().map(|t| line(t)).collect(),
        cost: 0,
    }
}

/// Issue 12 review: once the controller names a job in `stop`, its pending lines and the
/// lines still coming are dropped, not written; other jobs are not affected.
#[tokio::test]
async fn the_lines_of_a_stopped_job_are_dropped_pending_ones_included() {
    let kit = crate::testkit::kit("live-stopped").await;
    let (_tx, rx) = mpsc::channel(8);
    let stopped = StoppedJobs::default();
    // Driven op by op, without its task: the stop comes while "pending" waits.
    let mut forwarder = LiveForwarder::new(
        kit.store.clone(),
        rx,
        Arc::new(AtomicUsize::new(0)),
        stopped.clone(),
    );
    forwarder.handle(lines_op("a", &["pending"])).await;
    forwarder.handle(lines_op("b", &["kept"])).await;
    stopped.stop(&["a".to_owned()]);
    forwarder.handle(lines_op("a", &["late"])).await;
    forwarder.push_all().await;
    let (done, stored) = oneshot::channel();
    let end = Op::End {
        job: "a".into(),
        lines: vec![line("a marker")],
        unsent: 5,
        done,
    };
    forwarder.handle(end).await;
    stored.await.unwrap();
    assert_eq!(rows(&kit.store).await, [("b".into(), 1)]);
    assert!(
        forwarder.pending.is_empty(),
        "the end of the run forgets the job"
    );
}

#[test]
fn a_body_prefix_finds_the_rows_of_its_job_only() {
    let body = batch_body("job \"1\"", &[line("hi")]);
    assert!(body.starts_with(&body_prefix("job \"1\"")));
    assert!(!body.starts_with(&body_prefix("job ")));
    assert_eq!(body_job(&body).as_deref(), Some("job \"1\""));
    assert_eq!(body_job("{\"seq\":1}"), None);
}
