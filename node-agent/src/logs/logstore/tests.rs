use super::*;
use crate::logs::loglevels::LevelFilter;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("jsagent-logstore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn settings(&self, max_size: u64, keep: u32) -> Settings {
        Settings {
            dir: self.0.clone(),
            max_size,
            keep,
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn source(jobid: &str) -> Arc<Source> {
    Arc::new(Source {
        jobid: jobid.into(),
        domain: "ops".into(),
        name: "job".into(),
    })
}

fn entry(src: &Arc<Source>, epoch: u64, level: u8, data: &str) -> Entry {
    Entry {
        source: src.clone(),
        epoch,
        level,
        data: data.into(),
        store: true,
        forward: false,
    }
}

fn all() -> Query {
    Query {
        jobid: None,
        timefrom: None,
        timeto: None,
        levels: LevelFilter::ALL,
    }
}

fn texts(messages: &[LogMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.data.as_str()).collect()
}

const BIG: u64 = 1 << 40;

#[tokio::test]
async fn messages_are_stored_in_order_with_increasing_ids() {
    let dir = TempDir::new("order");
    let store = LogStore::open(dir.settings(BIG, 2), None).await.unwrap();
    let src = source("j");
    for batch in 0..3 {
        let entries = (0..5)
            .map(|i| entry(&src, 1, 1, &format!("{batch}.{i}")))
            .collect();
        store.append(entries).await.unwrap();
    }
    let got = store.get_msgs(all()).await.unwrap();
    assert_eq!(got.len(), 15);
    assert_eq!(
        (got[0].data.as_str(), got[14].data.as_str()),
        ("0.0", "2.4")
    );
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        (
            got[0].jobid.as_str(),
            got[0].domain.as_str(),
            got[0].name.as_str()
        ),
        ("j", "ops", "job")
    );
}

#[tokio::test]
async fn ids_keep_increasing_after_a_reopen() {
    let dir = TempDir::new("reopen");
    let src = source("j");
    let first = {
        let store = LogStore::open(dir.settings(BIG, 2), None).await.unwrap();
        store.append(vec![entry(&src, 1, 1, "a")]).await.unwrap();
        store.get_msgs(all()).await.unwrap()[0].id
    };
    assert!(
        first >= 1_600_000_000_000_000,
        "ids start at now_ms × 1000: {first}"
    );
    let store = LogStore::open(dir.settings(BIG, 2), None).await.unwrap();
    store.append(vec![entry(&src, 1, 1, "b")]).await.unwrap();
    let got = store.get_msgs(all()).await.unwrap();
    assert_eq!(texts(&got), ["a", "b"]);
    assert!(got[1].id > first);
}

#[tokio::test]
async fn filters_select_by_job_time_and_level() {
    let dir = TempDir::new("filters");
    let store = LogStore::open(dir.settings(BIG, 2), None).await.unwrap();
    let (a, b) = (source("a"), source("b"));
    store
        .append(vec![
            entry(&a, 100, 1, "a100"),
            entry(&b, 150, 7, "b150"),
            entry(&a, 200, 7, "a200"),
            entry(&a, 300, 9, "a300"),
        ])
        .await
        .unwrap();
    let q = |jobid: Option<&str>, from, to, levels: &str| Query {
        jobid: jobid.map(str::to_owned),
        timefrom: from,
        timeto: to,
        levels: LevelFilter::parse(levels).unwrap(),
    };
    let get = |query| {
        let store = store.clone();
        async move { texts(&store.get_msgs(query).await.unwrap()).join(" ") }
    };
    assert_eq!(get(q(Some("a"), None, None, "*")).await, "a100 a200 a300");
    assert_eq!(get(q(None, Some(150), Some(200), "*")).await, "b150 a200");
    assert_eq!(get(q(None, None, None, "7-9")).await, "b150 a200 a300");
    assert_eq!(get(q(Some("a"), Some(101), None, "1,9")).await, "a300");
    assert_eq!(get(q(Some("nope"), None, None, "*")).await, "");
}

#[tokio::test]
async fn get_answers_the_newest_1000_oldest_first() {
    let dir = TempDir::new("limit");
    let store = LogStore::open(dir.settings(BIG, 2), None).await.unwrap();
    let src = source("j");
    let entries = (0..1500)
        .map(|i| entry(&src, i, 1, &i.to_string()))
        .collect();
    store.append(entries).await.unwrap();
    let got = store.get_msgs(all()).await.unwrap();
    assert_eq!(got.len(), GET_LIMIT);
    assert_eq!(
        (got[0].data.as_str(), got[999].data.as_str()),
        ("500", "1499")
    );
}

#[tokio::test]
async fn del_msgs_deletes_the_matches_and_counts_them() {
    let dir = TempDir::new("delete");
    let store = LogStore::open(dir.settings(BIG, 2), None).await.unwrap();
    let (a, b) = (source("a"), source("b"));
    store
        .append(vec![
            entry(&a, 1, 1, "a1"),
            entry(&a, 2, 2, "a2"),
            entry(&b, 3, 1, "b3"),
        ])
        .await
        .unwrap();
    let only_a = Query {
        jobid: Some("a".into()),
        ..all()
    };
    assert_eq!(store.del_msgs(only_a.clone()).await.unwrap(), 2);
    assert_eq!(store.del_msgs(only_a).await.unwrap(), 0);
    assert_eq!(texts(&store.get_msgs(all()).await.unwrap()), ["b3"]);
}

#[tokio::test]
async fn full_files_rotate_and_only_the_newest_are_kept() {
    let dir = TempDir::new("rotate");
    let store = LogStore::open(dir.settings(64 * 1024, 2), None)
        .await
        .unwrap();
    let src = source("j");
    let line = "x".repeat(200);
    for batch in 0..40 {
        let entries = (0..20)
            .map(|i| entry(&src, batch * 100 + i, 1, &format!("{batch}.{i} {line}")))
            .collect();
        store.append(entries).await.unwrap();
        store.flush().await.unwrap();
    }
    let rotated = rotated_files(&dir.0).unwrap();
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    for file in &rotated {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size < 2 * 64 * 1024, "{} is {size} bytes", file.display());
        assert!(!file.with_extension("db-wal").exists());
    }
    // The oldest messages went with the removed files; the rest are found across files, in order.
    let got = store.get_msgs(all()).await.unwrap();
    assert!(got.len() > 100 && got.len() < 800, "{}", got.len());
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
    assert!(got.last().unwrap().data.starts_with("39.19 "));
    let oldest_kept = got[0].epoch;
    let in_rotated = Query {
        timeto: Some(oldest_kept + 10),
        ..all()
    };
    assert!(!store.get_msgs(in_rotated.clone()).await.unwrap().is_empty());
    let deleted = store.del_msgs(in_rotated.clone()).await.unwrap();
    assert!(deleted > 0);
    assert!(store.get_msgs(in_rotated).await.unwrap().is_empty());
}

#[tokio::test]
async fn forwarded_messages_carry_their_ids_and_unstored_ones_are_forwarded_too() {
    let dir = TempDir::new("forward");
    let (tx, mut rx) = mpsc::channel(8);
    let store = LogStore::open(dir.settings(BIG, 2), Some(tx))
        .await
        .unwrap();
    let src = source("j");
    let mut only_forwarded = entry(&src, 1, 9, "alert");
    (only_forwarded.store, only_forwarded.forward) = (false, true);
    let mut both = entry(&src, 2, 8, "error");
    both.forward = true;
    store
        .append(vec![entry(&src, 0, 1, "stdout"), only_forwarded, both])
        .await
        .unwrap();
    let Some(Forwarded::Messages(forwarded)) = rx.recv().await else {
        panic!("nothing forwarded")
    };
    assert_eq!(texts(&forwarded), ["alert", "error"]);
    let stored = store.get_msgs(all()).await.unwrap();
    assert_eq!(texts(&stored), ["stdout", "error"]);
    assert_eq!(stored[1].id, forwarded[1].id);
    assert_eq!(forwarded[0].id, stored[0].id + 1);
    // A flush is passed on to the forwarder, after the messages before it.
    let flushed = tokio::spawn({
        let store = store.clone();
        async move { store.flush().await }
    });
    let Some(Forwarded::Flush(reply)) = rx.recv().await else {
        panic!("no flush")
    };
    reply.send(()).unwrap();
    flushed.await.unwrap().unwrap();
}

/// 1000 messages of 100 KB would be 100 MB in memory and could never fit a result: reading
/// stops just past [`GET_MAX_BYTES`], with the newest messages.
#[tokio::test]
async fn get_msgs_stops_reading_past_the_byte_cap() {
    let dir = TempDir::new("bytecap");
    let store = LogStore::open(dir.settings(BIG, 2), None).await.unwrap();
    let src = source("j");
    let big = "m".repeat(100_000);
    for i in 0..50 {
        let data = format!("{i}:{big}");
        store.append(vec![entry(&src, 1, 5, &data)]).await.unwrap();
    }
    let got = store.get_msgs(all()).await.unwrap();
    let bytes: usize = got.iter().map(|m| m.data.len()).sum();
    assert!(got.len() < 50, "all {} read", got.len());
    assert!(
        bytes > GET_MAX_BYTES && bytes < GET_MAX_BYTES + 200_000,
        "{bytes}"
    );
    assert!(got.last().unwrap().data.starts_with("49:"));
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
}
