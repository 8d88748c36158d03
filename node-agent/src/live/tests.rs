//! The per-run hook: the cap and its marker, lines not handed over and their marker, the bound
//! of the queue; and a run's lines through the readers into the outbox.

use super::*;
use crate::logs::logline::Stream;
use crate::logs::Logs;
use crate::store::OutboxKind;
use crate::supervisor::output::Readers;
use schemas::{ExecuteArgs, OutputBatch};
use tokio::io::AsyncWriteExt;

fn lines(texts: &[&str]) -> Vec<Line> {
    texts
        .iter()
        .map(|t| Line {
            level: 1,
            text: (*t).to_owned(),
        })
        .collect()
}

/// What the queue holds now: (fd, level, text) of each line, in order; frees its budget as
/// the forwarder would.
fn received(rx: &mut mpsc::Receiver<Op>, live: &LiveOutput) -> Vec<(u8, u8, String)> {
    let mut got = Vec::new();
    while let Ok(op) = rx.try_recv() {
        let lines = match op {
            Op::Lines { lines, cost, .. } => {
                live.queued.fetch_sub(cost, Ordering::Relaxed);
                lines
            }
            Op::End { lines, .. } => lines,
            Op::Flush(_) => continue,
        };
        got.extend(lines.into_iter().map(|l| (l.fd, l.level, l.line)));
    }
    got
}

fn texts(got: &[(u8, u8, String)]) -> Vec<&str> {
    got.iter().map(|(_, _, t)| t.as_str()).collect()
}

#[tokio::test]
async fn after_the_cap_a_run_gets_one_marker_and_nothing_more() {
    let (live, mut rx) = LiveOutput::detached(5);
    let run = live.run("j");
    run.offer(1, lines(&["a", "b", "c"]));
    run.offer(2, lines(&["d", "e", "f", "g"]));
    assert!(!run.wants_lines());
    run.offer(1, lines(&["h"]));
    let got = received(&mut rx, &live);
    assert_eq!(texts(&got)[..5], ["a", "b", "c", "d", "e"]);
    assert_eq!(
        got[5],
        (
            2,
            MARKER_LEVEL,
            "[jsagent] live output stopped after 5 lines; the result keeps the last lines".into()
        )
    );
    assert_eq!(got.len(), 6);
    assert_eq!(got[3].0, 2, "the fd of the read is kept");
    // A new run of the same job starts again.
    let again = live.run("j");
    again.offer(1, lines(&["x"]));
    assert_eq!(texts(&received(&mut rx, &live)), ["x"]);
}

#[tokio::test]
async fn lines_that_find_no_room_are_counted_and_reported_once_there_is() {
    let (live, mut rx) = LiveOutput::detached(usize::MAX / 2);
    let run = live.run("j");
    let big = "x".repeat(64 << 10);
    let mut offered = 0;
    // Far more than the byte budget, nobody reading: the reader is never held up.
    for _ in 0..200 {
        run.offer(1, lines(&[big.as_str(), big.as_str()]));
        offered += 2;
        assert!(
            live.queued_bytes() <= QUEUE_BYTES,
            "{}",
            live.queued_bytes()
        );
    }
    let first = received(&mut rx, &live);
    assert_eq!(live.queued_bytes(), 0);
    let forwarded = first.len();
    assert!(forwarded < offered && forwarded > 0, "{forwarded}");
    run.offer(1, lines(&["after"]));
    let got = received(&mut rx, &live);
    let marker = format!(
        "[jsagent] {} lines not forwarded: the agent was busy",
        offered - forwarded
    );
    assert_eq!(got, [(2, MARKER_LEVEL, marker), (1, 1, "after".to_owned())]);
}

#[tokio::test]
async fn the_queue_stays_bounded_for_a_million_lines() {
    let (live, mut rx) = LiveOutput::detached(usize::MAX / 2);
    let run = live.run("j");
    let chunk: Vec<String> = (0..1000).map(|i| format!("line {i:>60}")).collect();
    let mut most = 0;
    for _ in 0..1000 {
        run.offer(
            1,
            chunk
                .iter()
                .map(|t| Line {
                    level: 1,
                    text: t.clone(),
                })
                .collect(),
        );
        most = most.max(live.queued_bytes());
    }
    // Bytes of lines queued, and messages: both within their bounds whatever the job prints.
    assert!(most <= QUEUE_BYTES, "{most}");
    let mut messages = 0;
    while rx.try_recv().is_ok() {
        messages += 1;
    }
    assert!(messages <= QUEUE, "{messages}");
}

async fn output_rows(store: &Store) -> Vec<OutputBatch> {
    let rows = store.outbox_take(OutboxKind::Output, 10_000).await.unwrap();
    rows.iter()
        .map(|r| {
            let body = forwarder::with_seq(r.seq, &r.body).unwrap();
            serde_json::from_str(&body).unwrap()
        })
        .collect()
}

fn args(json: serde_json::Value) -> ExecuteArgs {
    serde_json::from_value(json).unwrap()
}

/// Runs "a job" printing `stdout` and `stderr` through the readers with the given logs.
async fn print(logs: &Logs, args: &ExecuteArgs, stdout: Vec<u8>, stderr: Vec<u8>) {
    let logger = logs.job_logger("j", args).unwrap();
    let (mut out_w, out_r) = tokio::io::duplex(1 << 16);
    let (mut err_w, err_r) = tokio::io::duplex(1 << 16);
    let readers = Readers::start(Some(out_r), Some(err_r), Some(logger));
    let write = async move {
        out_w.write_all(&stdout).await.unwrap();
        drop(out_w);
        err_w.write_all(&stderr).await.unwrap();
    };
    write.await;
    readers.drain().await;
}

#[tokio::test]
async fn a_runs_lines_are_in_the_outbox_with_their_fd_and_level_when_it_ends() {
    let kit = crate::testkit::kit("live-levels").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    let stdout = b"plain\n3::for users\n20:::\n{\"a\": 1}\n:::\n".to_vec();
    print(
        &logs,
        &args(serde_json::json!({})),
        stdout,
        b"oops\n".to_vec(),
    )
    .await;
    // No flush: the end of the run put them in.
    let batches = output_rows(&kit.store).await;
    let mut got: Vec<(u8, u8, String)> = batches
        .iter()
        .flat_map(|b| b.lines.iter().map(|l| (l.fd, l.level, l.line.clone())))
        .collect();
    got.sort_by_key(|(fd, ..)| *fd);
    let want = [
        (1, 1, "plain"),
        (1, 3, "3::for users"),
        (1, 20, "20:::"),
        (1, 20, "{\"a\": 1}"),
        (1, 20, ":::"),
        (2, 2, "oops"),
    ];
    let want: Vec<(u8, u8, String)> = want
        .iter()
        .map(|(f, l, t)| (*f, *l, (*t).to_owned()))
        .collect();
    assert_eq!(got, want);
    assert!(batches.iter().all(|b| b.id == "j"));
    assert!(batches.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn output_false_in_the_args_or_the_config_forwards_nothing() {
    let kit = crate::testkit::kit("live-off").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    let off = args(serde_json::json!({"output": false}));
    print(&logs, &off, b"a\nb\n".to_vec(), b"c\n".to_vec()).await;
    logs.flush().await;
    assert!(output_rows(&kit.store).await.is_empty());

    let mut config = kit.config.clone();
    config.output = false;
    let logs = Logs::start(&config, kit.store.clone(), None).await.unwrap();
    let on = args(serde_json::json!({"output": true}));
    print(&logs, &on, b"a\nb\n".to_vec(), b"c\n".to_vec()).await;
    logs.flush().await;
    assert!(output_rows(&kit.store).await.is_empty());
}

/// A job printing a million lines: the outbox gets the run's cap and its marker, no more.
#[tokio::test]
async fn a_million_lines_leave_the_cap_and_a_marker_in_the_outbox() {
    let kit = crate::testkit::kit("live-million").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    let stdout: Vec<u8> = (0..1_000_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    // Nothing stored in the log store: this is about live output.
    let quiet = args(serde_json::json!({"loglevels_db": "9", "loglevels_ac": "9"}));
    print(&logs, &quiet, stdout, Vec::new()).await;
    let lines: Vec<String> = output_rows(&kit.store)
        .await
        .into_iter()
        .flat_map(|b| b.lines.into_iter().map(|l| l.line))
        .collect();
    let max = kit.config.output_max_lines;
    assert_eq!(lines.len(), max + 1);
    // The run's 10,000 lines take ~0.5 MB of queue in a few messages, far within its bounds:
    // none is dropped, so they are exactly the first ones, then the marker.
    let want: Vec<String> = (0..max).map(|i| i.to_string()).collect();
    assert_eq!(lines[..max], want[..]);
    assert!(lines[max].starts_with("[jsagent] live output stopped after 10000 lines"));
}

/// Paused time: a line handed over is in the outbox [`forwarder::INTERVAL`] later, not before.
#[tokio::test(start_paused = true)]
async fn lines_reach_the_outbox_within_the_interval() {
    let kit = crate::testkit::kit("live-interval").await;
    let live = LiveOutput::start(kit.store.clone(), 10);
    let run = live.run("j");
    run.offer(Stream::Stdout.fd(), lines(&["now"]));
    tokio::time::sleep(forwarder::INTERVAL / 2).await;
    assert!(
        output_rows(&kit.store).await.is_empty(),
        "batched, not at once"
    );
    tokio::time::sleep(forwarder::INTERVAL / 2 + std::time::Duration::from_millis(1)).await;
    // The forwarder asks the store (a thread of its own) how full the backlog is before it
    // writes: paused time runs on while it waits, so give that thread real time to answer.
    let mut batches = output_rows(&kit.store).await;
    for _ in 0..500 {
        if !batches.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        tokio::task::yield_now().await;
        batches = output_rows(&kit.store).await;
    }
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].lines[0].line, "now");
}

/// Issue 12 review: a job the controller stopped hands over nothing more, not even a marker
/// (the controller added one), and counts what it did not send; its later runs stay stopped.
#[tokio::test]
async fn a_run_of_a_stopped_job_hands_over_nothing_and_counts_its_lines() {
    let (live, mut rx) = LiveOutput::detached(100);
    let run = live.run("j");
    run.offer(1, lines(&["a"]));
    assert_eq!(texts(&received(&mut rx, &live)), ["a"]);
    live.stopped().stop(&["j".to_owned()]);
    run.offer(1, lines(&["b", "c"]));
    assert!(!run.wants_lines());
    run.skipped(3);
    assert!(received(&mut rx, &live).is_empty());
    let ending = tokio::spawn({
        let run = run.clone();
        async move { run.end().await }
    });
    let Some(Op::End {
        lines: markers,
        unsent,
        done,
        ..
    }) = rx.recv().await
    else {
        panic!("no end");
    };
    assert_eq!((markers.len(), unsent), (0, 5));
    let _ = done.send(());
    ending.await.unwrap();
    // Another run of the job, and another job.
    live.run("j").offer(1, lines(&["d"]));
    live.run("k").offer(1, lines(&["e"]));
    assert_eq!(texts(&received(&mut rx, &live)), ["e"]);
}

/// Review finding: a 70,000-byte line was cut at 64 KiB and then marked, so the controller
/// cut it again. Through the readers into the outbox it is within `MAX_LINE`, with its mark.
#[tokio::test]
async fn a_70000_byte_line_is_forwarded_within_max_line_with_the_agents_mark() {
    let kit = crate::testkit::kit("live-long-line").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    let mut stdout = vec![b'x'; 70_000];
    stdout.extend(b"\nshort\n");
    print(&logs, &args(serde_json::json!({})), stdout, Vec::new()).await;
    let lines: Vec<String> = output_rows(&kit.store)
        .await
        .into_iter()
        .flat_map(|b| b.lines.into_iter().map(|l| l.line))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].len() <= schemas::output::MAX_LINE,
        "{}",
        lines[0].len()
    );
    assert!(lines[0].ends_with(crate::logs::logline::LINE_CUT_MARK));
    assert_eq!(lines[1], "short");
}
