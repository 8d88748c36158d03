use super::*;
use crate::live::StoppedJobs;
use schemas::JobState;
use serde_json::json;

fn row(seq: i64, bytes: usize) -> OutboxRow {
    OutboxRow {
        seq,
        body: "x".repeat(bytes),
    }
}

#[test]
fn batches_keep_the_order_and_stay_under_the_size() {
    let rows = vec![row(1, 40), row(2, 40), row(3, 150), row(4, 10), row(5, 10)];
    let mut batches = by_bytes(rows, 100);
    let mut order = Vec::new();
    while let Some(batch) = batches.pop() {
        order.push(batch.iter().map(|r| r.seq).collect::<Vec<_>>());
    }
    assert_eq!(order, [vec![1, 2], vec![3], vec![4, 5]]);
}

#[test]
fn a_refused_result_becomes_an_error_of_the_same_job_and_run() {
    let mut r = JobResult::new("j1", 1, 2, "execute", json!({"cmd": "x"}), JobState::Ok);
    r.run = 4;
    r.is_final = false;
    r.exit_code = Some(0);
    r.streams = vec!["o".repeat(300_000), String::new()];
    let body = serde_json::to_string(&r).unwrap();
    let e = refused_result(&body, "request body over the limit of 200000 bytes").unwrap();
    assert_eq!(
        (e.id.as_str(), e.gid, e.nid, e.run, e.is_final, e.state),
        ("j1", 1, 2, 4, false, JobState::Error)
    );
    assert_eq!(e.args, json!({"cmd": "x"}));
    assert_eq!(e.streams, ["", ""]);
    let data = e.data.as_str().unwrap();
    assert!(
        data.starts_with(&format!("result of {} bytes refused by the controller (413 too large: request body over the limit of 200000 bytes); replaced", body.len())),
        "{data}"
    );
    assert!(refused_result("not json", "x").is_none());
}

#[test]
fn large_args_are_not_echoed_in_the_error() {
    let r = JobResult::new(
        "j",
        1,
        2,
        "execute",
        json!({"script": "s".repeat(10_000)}),
        JobState::Ok,
    );
    let e = refused_result(&serde_json::to_string(&r).unwrap(), "x").unwrap();
    assert_eq!(e.args, json!({}));
}

/// A fake controller: records each request's path and body, in order, and answers what
/// `answer` says for them (status, JSON body).
mod fake {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub(super) type Seen = Arc<Mutex<Vec<(String, String)>>>;

    pub(super) async fn start(answer: fn(&str, &str) -> (u16, &'static str)) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Seen::default();
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (path, body) = read_request(&mut socket).await;
                let (status, text) = answer(&path, &body);
                recorded.lock().unwrap().push((path, body));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (url, seen)
    }

    async fn read_request(socket: &mut tokio::net::TcpStream) -> (String, String) {
        let mut data = Vec::new();
        let mut buf = [0u8; 65536];
        let head_end = loop {
            if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "request cut short");
            data.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while data.len() < head_end + length {
            let n = socket.read(&mut buf).await.unwrap();
            data.extend_from_slice(&buf[..n]);
        }
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let body = String::from_utf8_lossy(&data[head_end..]).into_owned();
        (path, body)
    }
}

async fn uploader_for(kit: &crate::testkit::Kit, url: String) -> Uploader {
    let mut config = kit.config.clone();
    config.controller = reqwest::Url::parse(&format!("{url}/")).unwrap();
    let controller = Controller::new(&config).unwrap();
    Uploader::new(
        kit.store.clone(),
        controller,
        "test".into(),
        StoppedJobs::default(),
    )
}

fn output_row(id: &str, line: &str) -> String {
    json!({"id": id, "lines": [{"fd": 1, "level": 1, "line": line, "time": 1}]}).to_string()
}

/// Issue 12: the live output queued before a result is posted before it (so `output:<id>`
/// holds a run's lines when its result shows), output queued after it is not, and each batch
/// carries its row's seq.
#[tokio::test]
async fn output_queued_before_a_result_is_posted_before_it() {
    let kit = crate::testkit::kit("uploader-order").await;
    let (url, seen) = fake::start(|_, _| (200, "{}")).await;
    let store = &kit.store;
    let before = store
        .outbox_push_numbered(OutboxKind::Output, vec![output_row("j", "before")])
        .await
        .unwrap();
    let result = JobResult::new("j", 1, 2, "execute", json!({}), JobState::Ok);
    store
        .outbox_push(
            OutboxKind::Result,
            vec![serde_json::to_string(&result).unwrap()],
        )
        .await
        .unwrap();
    store
        .outbox_push(OutboxKind::Output, vec![output_row("j", "after")])
        .await
        .unwrap();
    uploader_for(&kit, url)
        .await
        .upload_pending()
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen
        .iter()
        .map(|(p, _)| p.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(paths, ["output", "result", "output"]);
    let first: Vec<schemas::OutputBatch> = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(
        (first[0].seq, first[0].lines[0].line.as_str()),
        (before[0] as u64, "before")
    );
    assert!(store
        .outbox_take(OutboxKind::Output, 10)
        .await
        .unwrap()
        .is_empty());
}

/// A 413 splits output batches; a single batch still refused is dropped, the rest delivered.
#[tokio::test]
async fn too_large_output_is_split_and_a_single_refused_batch_dropped() {
    let kit = crate::testkit::kit("uploader-413").await;
    let (url, seen) = fake::start(|_, body| {
        let batches: Vec<Value> = serde_json::from_str(body).unwrap();
        if batches.len() > 1 || body.contains("huge") {
            (413, r#"{"error":"too_large","message":"over"}"#)
        } else {
            (200, r#"{"appended":1}"#)
        }
    })
    .await;
    let rows = vec![
        output_row("j", "a"),
        output_row("j", "huge"),
        output_row("j", "c"),
    ];
    kit.store
        .outbox_push(OutboxKind::Output, rows)
        .await
        .unwrap();
    uploader_for(&kit, url)
        .await
        .upload_pending()
        .await
        .unwrap();
    let delivered: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, body)| !body.contains("huge") && !body.contains("},{"))
        .map(|(_, body)| body.clone())
        .collect();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert!(kit
        .store
        .outbox_take(OutboxKind::Output, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Review finding: the uploader looked again from the first kind after every post, so while
/// output kept coming, stats and logs waited. After results the kinds take turns: with a new
/// output row before every round, the waiting stats and logs are posted within three rounds.
#[tokio::test]
async fn stats_and_logs_are_posted_while_output_keeps_coming() {
    let kit = crate::testkit::kit("uploader-turns").await;
    let (url, _seen) = fake::start(|_, _| (200, "{}")).await;
    let store = &kit.store;
    store
        .outbox_push(OutboxKind::Stats, vec![json!({"s": 1}).to_string()])
        .await
        .unwrap();
    store
        .outbox_push(OutboxKind::Logs, vec![json!({"l": 1}).to_string()])
        .await
        .unwrap();
    let uploader = uploader_for(&kit, url).await;
    let mut posted = Vec::new();
    for round in 0..6 {
        store
            .outbox_push(
                OutboxKind::Output,
                vec![output_row("chatty", &round.to_string())],
            )
            .await
            .unwrap();
        posted.push(uploader.upload_next().await.unwrap().unwrap());
    }
    let within = &posted[..3];
    assert!(
        within.contains(&OutboxKind::Stats) && within.contains(&OutboxKind::Logs),
        "{posted:?}"
    );
    // Results still go first, after the output queued before them.
    store
        .outbox_push(OutboxKind::Logs, vec![json!({"l": 2}).to_string()])
        .await
        .unwrap();
    store
        .outbox_push(OutboxKind::Output, vec![output_row("j", "before")])
        .await
        .unwrap();
    let result = JobResult::new("j", 1, 2, "execute", json!({}), JobState::Ok);
    store
        .outbox_push(
            OutboxKind::Result,
            vec![serde_json::to_string(&result).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        uploader.upload_next().await.unwrap(),
        Some(OutboxKind::Output)
    );
    assert_eq!(
        uploader.upload_next().await.unwrap(),
        Some(OutboxKind::Result)
    );
}

/// Issue 12 review: the controller's `stop` names a job; the uploader stops it, deletes its
/// queued output rows and posts none queued later, while other jobs' rows go on.
#[tokio::test]
async fn a_job_named_in_stop_is_stopped_and_its_rows_no_more_posted() {
    let kit = crate::testkit::kit("uploader-stop").await;
    let (url, seen) = fake::start(|_, body| {
        if body.contains("first") {
            (
                200,
                r#"{"capped":1,"stop":["j"],"rejected":[{"id":"j","error":"x","message":"y"}]}"#,
            )
        } else {
            (200, "{}")
        }
    })
    .await;
    let store = &kit.store;
    let push = |rows: Vec<String>| async move {
        store.outbox_push(OutboxKind::Output, rows).await.unwrap();
    };
    push(vec![output_row("j", "first")]).await;
    let uploader = uploader_for(&kit, url).await;
    uploader.upload_next().await.unwrap();
    assert!(uploader.stopped.contains("j") && !uploader.stopped.contains("k"));
    assert!(uploader.warned.lock().unwrap().contains("j"));
    // Queued before the agent learned of the stop: deleted when the controller names it again.
    push(vec![output_row("j", "queued"), output_row("k", "other")]).await;
    uploader.stop(&["j".to_owned()]).await;
    let left = store.outbox_take(OutboxKind::Output, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].body.contains("other"));
    // Queued later (in flight in the forwarder): not posted.
    push(vec![output_row("j", "late")]).await;
    uploader.upload_pending().await.unwrap();
    let bodies: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies[1].contains("other") && !bodies[1].contains("late"));
    assert!(store
        .outbox_take(OutboxKind::Output, 10)
        .await
        .unwrap()
        .is_empty());
}
