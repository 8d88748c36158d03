use std::fs;
use std::time::SystemTime;

use super::*;
use crate::testkit::TestDir;

const MAX: u64 = 1000;

/// A [`Files`] whose `$agentroot` is `dir/agent`, with a `max_file_size` of [`MAX`].
fn files(dir: &Path) -> Files {
    let text = |p: PathBuf| p.to_string_lossy().into_owned();
    Files {
        templates: Templates {
            agentroot: text(dir.join("agent")),
            root: text(dir.join("root")),
            tmp: text(dir.join("tmp")),
        },
        max_file_size: MAX,
        uploads_dir: dir.join("agent").join("uploads"),
        writing: Arc::new(tokio::sync::Mutex::new(())),
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn put_args(path: &Path, content: &[u8], offset: u64, upload: &str) -> PutFileArgs {
    PutFileArgs {
        path: path.to_string_lossy().into_owned(),
        mode: None,
        size: content.len() as u64,
        sha256: sha_hex(content),
        offset,
        upload: upload.into(),
        max_wait: 0,
    }
}

fn b64(bytes: &[u8]) -> Option<Value> {
    Some(Value::String(BASE64.encode(bytes)))
}

/// Uploads `content` in chunks of `chunk` bytes; the answer of the last one.
async fn upload(files: &Files, args: &PutFileArgs, content: &[u8], chunk: usize) -> Value {
    let mut offset = 0;
    loop {
        let end = (offset + chunk).min(content.len());
        let args = PutFileArgs {
            offset: offset as u64,
            ..args.clone()
        };
        let answer = files
            .put(args, b64(&content[offset..end]))
            .await
            .unwrap_or_else(|e| panic!("chunk at {offset}: {e}"));
        offset = end;
        if offset >= content.len() {
            return answer;
        }
    }
}

fn parts_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

#[tokio::test]
async fn a_file_in_chunks_appears_whole_only_when_complete() {
    let dir = TestDir::new("files-chunks");
    let files = files(&dir);
    let target = dir.join("out.bin");
    let content: Vec<u8> = (0..700u32).map(|i| (i * 7 % 251) as u8).collect();
    let args = put_args(&target, &content, 0, "u1");

    let first = files.put(args.clone(), b64(&content[..300])).await.unwrap();
    assert_eq!(
        (first["received"].as_u64(), first["complete"].as_bool()),
        (Some(300), Some(false))
    );
    assert!(
        !target.exists(),
        "the target appeared before the upload was complete"
    );
    let part = dir.join(".out.bin.jsacc-u1.part");
    assert_eq!(fs::metadata(&part).unwrap().len(), 300);
    #[cfg(unix)]
    assert_eq!(
        platform::mode_of(&fs::metadata(&part).unwrap()),
        Some(0o600)
    );

    let second = PutFileArgs {
        offset: 300,
        ..args.clone()
    };
    let answer = files.put(second, b64(&content[300..600])).await.unwrap();
    assert_eq!(answer["received"], json!(600));
    assert!(!target.exists());
    let third = PutFileArgs {
        offset: 600,
        ..args
    };
    let last = files.put(third, b64(&content[600..])).await.unwrap();
    assert_eq!(last["complete"], json!(true), "{last}");
    assert_eq!(fs::read(&target).unwrap(), content);
    assert_eq!(last["sha256"], json!(sha_hex(&content)));
    assert!(parts_in(&dir).is_empty());
}

#[tokio::test]
async fn the_mode_is_applied_and_an_old_file_keeps_its_own() {
    let dir = TestDir::new("files-mode");
    let files = files(&dir);
    let target = dir.join("run.sh");
    let mut args = put_args(&target, b"#!/bin/sh\n", 0, "m");
    args.mode = Some(FileMode(0o750));
    let answer = upload(&files, &args, b"#!/bin/sh\n", 100).await;
    #[cfg(unix)]
    {
        assert_eq!(answer["mode"], json!("0750"));
        assert_eq!(
            platform::mode_of(&fs::metadata(&target).unwrap()),
            Some(0o750)
        );
        // Replaced without a mode: keeps 0750.
        let args = put_args(&target, b"echo\n", 0, "m2");
        upload(&files, &args, b"echo\n", 100).await;
        assert_eq!(
            platform::mode_of(&fs::metadata(&target).unwrap()),
            Some(0o750)
        );
        assert_eq!(fs::read(&target).unwrap(), b"echo\n");
    }
    #[cfg(not(unix))]
    assert_eq!(answer["mode"], Value::Null);
}

#[tokio::test]
async fn a_repeated_chunk_is_harmless() {
    let dir = TestDir::new("files-repeat");
    let files = files(&dir);
    let target = dir.join("f");
    let content = b"0123456789";
    let args = put_args(&target, content, 0, "r");
    files.put(args.clone(), b64(&content[..4])).await.unwrap();
    let again = files.put(args.clone(), b64(&content[..4])).await.unwrap();
    assert_eq!(again["received"], json!(4));
    let rest = PutFileArgs { offset: 4, ..args };
    let done = files.put(rest.clone(), b64(&content[4..])).await.unwrap();
    assert_eq!(done["complete"], json!(true));
    // The completing chunk delivered again: answered complete, the file untouched.
    let repeat = files.put(rest, b64(&content[4..])).await.unwrap();
    assert_eq!(repeat["complete"], json!(true), "{repeat}");
    assert_eq!(fs::read(&target).unwrap(), content);
}

#[tokio::test]
async fn a_gap_is_refused_with_the_offset_expected() {
    let dir = TestDir::new("files-gap");
    let files = files(&dir);
    let target = dir.join("f");
    let content = b"0123456789";
    let args = put_args(&target, content, 0, "g");
    files.put(args.clone(), b64(&content[..4])).await.unwrap();
    let err = files
        .put(
            PutFileArgs {
                offset: 6,
                ..args.clone()
            },
            b64(&content[6..]),
        )
        .await
        .unwrap_err();
    assert!(err.contains("expected offset 4"), "{err}");
    let err = files
        .put(
            PutFileArgs {
                upload: "nope".into(),
                offset: 4,
                ..args
            },
            b64(&content[4..]),
        )
        .await
        .unwrap_err();
    assert!(err.contains("expected `offset` 0, got 4"), "{err}");
}

#[tokio::test]
async fn a_wrong_sha256_leaves_no_target_and_no_part() {
    let dir = TestDir::new("files-sha");
    let files = files(&dir);
    let target = dir.join("f");
    let mut args = put_args(&target, b"hello", 0, "s");
    args.sha256 = sha_hex(b"HELLO");
    let err = files.put(args, b64(b"hello")).await.unwrap_err();
    assert!(
        err.contains("sha256") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!target.exists());
    assert!(parts_in(&dir).is_empty());
    assert_eq!(
        files.sweep(Duration::ZERO),
        0,
        "the part is no longer listed"
    );
}

#[tokio::test]
async fn files_over_max_file_size_are_refused_naming_the_limit() {
    let dir = TestDir::new("files-limit");
    let files = files(&dir);
    let target = dir.join("big");
    let content = vec![1u8; MAX as usize + 1];
    let err = files
        .put(put_args(&target, &content, 0, "b"), b64(&content[..10]))
        .await
        .unwrap_err();
    assert!(err.contains("max_file_size of 1000 bytes"), "{err}");
    assert!(parts_in(&dir).is_empty());
    fs::write(&target, &content).unwrap();
    let get = GetFileArgs {
        path: target.to_string_lossy().into_owned(),
        offset: 0,
        length: 10,
        max_wait: 0,
    };
    let err = files.get(get).await.unwrap_err();
    assert!(err.contains("max_file_size of 1000 bytes"), "{err}");
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let dir = TestDir::new("files-bad");
    let files = files(&dir);
    let args = put_args(Path::new("relative/f"), b"x", 0, "x");
    let err = files.put(args, b64(b"x")).await.unwrap_err();
    assert!(err.contains("`path` `relative/f` is not absolute"), "{err}");
    let args = put_args(&dir.join("f"), b"x", 0, "x");
    let err = files
        .put(args.clone(), Some(json!("%%%")))
        .await
        .unwrap_err();
    assert!(err.starts_with("`data`: not base64"), "{err}");
    let err = files.put(args, b64(b"xy")).await.unwrap_err();
    assert!(err.contains("ends past `size` 1"), "{err}");
    let onto_a_dir = put_args(&dir, b"x", 0, "d");
    let err = files.put(onto_a_dir, b64(b"x")).await.unwrap_err();
    assert!(err.ends_with("is not a regular file"), "{err}");
}

#[tokio::test]
async fn paths_are_templated() {
    let dir = TestDir::new("files-template");
    let files = files(&dir);
    fs::create_dir_all(dir.join("agent")).unwrap();
    let mut args = put_args(Path::new("x"), b"abc", 0, "t");
    args.path = "$agentroot/conf.txt".into();
    let answer = upload(&files, &args, b"abc", 10).await;
    let written = dir.join("agent").join("conf.txt");
    assert_eq!(answer["path"], json!(written));
    assert_eq!(fs::read(&written).unwrap(), b"abc");
}

#[tokio::test]
async fn get_file_reads_in_chunks_with_the_sha256_at_the_end() {
    let dir = TestDir::new("files-get");
    let files = files(&dir);
    let path = dir.join("data");
    let content: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
    fs::write(&path, &content).unwrap();
    let mut got = Vec::new();
    let mut last = Value::Null;
    while last["eof"] != json!(true) {
        let args = GetFileArgs {
            path: path.to_string_lossy().into_owned(),
            offset: got.len() as u64,
            length: 100,
            max_wait: 0,
        };
        last = files.get(args).await.unwrap();
        assert_eq!(last["size"], json!(250));
        let sha_now = last.get("sha256").is_some();
        assert_eq!(sha_now, last["eof"] == json!(true), "{last}");
        got.extend(BASE64.decode(last["data"].as_str().unwrap()).unwrap());
    }
    assert_eq!(got, content);
    assert_eq!(last["sha256"], json!(sha_hex(&content)));
    #[cfg(unix)]
    assert!(last["mode"].is_string());

    let past = GetFileArgs {
        path: path.to_string_lossy().into_owned(),
        offset: 251,
        length: 10,
        max_wait: 0,
    };
    let err = files.get(past).await.unwrap_err();
    assert!(err.contains("`offset` 251 is past the end"), "{err}");
    let a_dir = GetFileArgs {
        path: dir.to_string_lossy().into_owned(),
        offset: 0,
        length: 10,
        max_wait: 0,
    };
    let err = files.get(a_dir).await.unwrap_err();
    assert!(
        err.contains("not a regular file") || err.contains("cannot open"),
        "{err}"
    );
}

#[tokio::test]
async fn an_empty_file_round_trips() {
    let dir = TestDir::new("files-empty");
    let files = files(&dir);
    let target = dir.join("empty");
    let answer = files
        .put(put_args(&target, b"", 0, "e"), None)
        .await
        .unwrap();
    assert_eq!(answer["complete"], json!(true));
    let args = GetFileArgs {
        path: target.to_string_lossy().into_owned(),
        offset: 0,
        length: 10,
        max_wait: 0,
    };
    let got = files.get(args).await.unwrap();
    assert_eq!(
        (got["eof"].clone(), got["data"].clone()),
        (json!(true), json!(""))
    );
    assert_eq!(got["sha256"], json!(sha_hex(b"")));
}

/// Makes a file look idle since `ago`.
fn age(path: &Path, ago: Duration) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

#[tokio::test]
async fn the_sweep_removes_parts_idle_for_a_day() {
    let dir = TestDir::new("files-sweep");
    let files = files(&dir);
    let content = b"0123456789";
    let old = put_args(&dir.join("a"), content, 0, "old");
    let fresh = put_args(&dir.join("b"), content, 0, "fresh");
    files.put(old, b64(&content[..5])).await.unwrap();
    files.put(fresh, b64(&content[..5])).await.unwrap();
    age(
        &dir.join(".a.jsacc-old.part"),
        STALE_PART + Duration::from_secs(60),
    );
    assert_eq!(files.sweep(STALE_PART), 1);
    assert_eq!(parts_in(&dir), [".b.jsacc-fresh.part"]);
    assert_eq!(fs::read_dir(&files.uploads_dir).unwrap().count(), 1);
}

#[tokio::test]
async fn a_new_upload_removes_abandoned_parts_of_its_target() {
    let dir = TestDir::new("files-abandoned");
    let files = files(&dir);
    let content = b"0123456789";
    let target = dir.join("t");
    files
        .put(put_args(&target, content, 0, "gone"), b64(&content[..5]))
        .await
        .unwrap();
    files
        .put(put_args(&target, content, 0, "slow"), b64(&content[..5]))
        .await
        .unwrap();
    age(
        &dir.join(".t.jsacc-gone.part"),
        ABANDONED_PART + Duration::from_secs(60),
    );
    files
        .put(put_args(&target, content, 0, "new"), b64(&content[..5]))
        .await
        .unwrap();
    let mut parts = parts_in(&dir);
    parts.sort();
    assert_eq!(parts, [".t.jsacc-new.part", ".t.jsacc-slow.part"]);
}

#[tokio::test]
async fn put_and_get_go_through_the_dispatcher() {
    use crate::command::dispatch::Incoming;
    use crate::store::Received;
    use schemas::JobState;

    let kit = crate::testkit::kit("files-dispatch").await;
    let target = kit.dir.join("via-dispatch");
    let raw = json!({"id": "put1", "gid": 1, "nid": 2, "cmd": "put_file",
        "args": {"path": target, "size": 2, "sha256": sha_hex(b"hi"), "upload": "d", "mode": "0600"},
        "data": BASE64.encode(b"hi")})
    .to_string();
    let incoming = Incoming::parse(raw.clone()).unwrap();
    let received = Received {
        id: "put1".into(),
        raw,
    };
    kit.store.receive(vec![received]).await.unwrap();
    kit.dispatcher.dispatch(incoming).await.unwrap();
    let result = first_result(&kit.store).await;
    assert_eq!(result.state, JobState::Ok, "{:?}", result.data);
    assert_eq!(result.data["complete"], json!(true));
    assert_eq!(fs::read(&target).unwrap(), b"hi");
    // The chunk is not kept in the ledger (7 days of every file uploaded).
    let stored = kit.store.stored_command("put1").await.unwrap().unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        (stored.get("data"), &stored["cmd"]),
        (None, &json!("put_file"))
    );
}

/// The first result in the outbox, waiting for it up to 30 s.
async fn first_result(store: &crate::store::Store) -> schemas::JobResult {
    result_of(store, None).await
}

/// The result of job `id` (any job if `None`) in the outbox, waiting for it up to 30 s.
async fn result_of(store: &crate::store::Store, id: Option<&str>) -> schemas::JobResult {
    use crate::store::OutboxKind;
    loop {
        let rows = store.outbox_take(OutboxKind::Result, 100).await.unwrap();
        let results = rows
            .iter()
            .map(|row| serde_json::from_str::<schemas::JobResult>(&row.body).unwrap());
        if let Some(result) = results.into_iter().find(|r| id.is_none_or(|id| r.id == id)) {
            return result;
        }
        tokio::time::timeout(Duration::from_secs(30), store.outbox_added())
            .await
            .expect("a result within 30 s");
    }
}

/// A `put_file` stored but not finished when the agent died is dispatched again at start-up:
/// with its chunk (it is dropped only with the result stored) it is written; without one (a
/// ledger whose chunk was dropped early) it ends `ERROR` naming `data`, never taken for an
/// empty chunk (which answered OK, received 0, and the client's next chunk was "out of order").
#[tokio::test]
async fn a_put_file_replayed_at_start_up_has_its_chunk_or_is_an_error() {
    use crate::store::Received;
    use schemas::JobState;

    let kit = crate::testkit::kit("files-replay").await;
    let target = kit.dir.join("replayed");
    let command = |id: &str, data: Option<&[u8]>| {
        let mut raw = json!({"id": id, "gid": 1, "nid": 2, "cmd": "put_file",
            "args": {"path": target, "size": 2, "sha256": sha_hex(b"hi"), "upload": id}});
        if let Some(data) = data {
            raw["data"] = json!(BASE64.encode(data));
        }
        Received {
            id: id.into(),
            raw: raw.to_string(),
        }
    };
    kit.store
        .receive(vec![command("lost", None)])
        .await
        .unwrap();
    crate::supervisor::recovery::recover(&kit.store, &kit.dispatcher, &kit.supervisor)
        .await
        .unwrap();
    let result = result_of(&kit.store, Some("lost")).await;
    assert_eq!(result.state, JobState::Error, "{}", result.data);
    let reason = result.data.as_str().unwrap();
    assert!(reason.starts_with("`data`: missing"), "{reason}");
    assert!(!target.exists());
    assert!(parts_in(&kit.dir).is_empty());

    kit.store
        .receive(vec![command("kept", Some(b"hi"))])
        .await
        .unwrap();
    crate::supervisor::recovery::recover(&kit.store, &kit.dispatcher, &kit.supervisor)
        .await
        .unwrap();
    let result = result_of(&kit.store, Some("kept")).await;
    assert_eq!(
        (result.state, &result.data["complete"]),
        (JobState::Ok, &json!(true)),
        "{}",
        result.data
    );
    assert_eq!(fs::read(&target).unwrap(), b"hi");
}

/// The result and the dropping of the chunk are one transaction.
#[tokio::test]
async fn finishing_a_put_file_drops_its_chunk_with_the_result_stored() {
    use crate::store::Received;
    use schemas::{JobResult, JobState};

    let kit = crate::testkit::kit("files-forget").await;
    let raw = json!({"id": "p", "gid": 1, "nid": 2, "cmd": "put_file",
        "args": {"path": "/x", "size": 2, "sha256": sha_hex(b"hi"), "upload": "p"}, "data": "aGk="});
    let received = Received {
        id: "p".into(),
        raw: raw.to_string(),
    };
    kit.store.receive(vec![received]).await.unwrap();
    let stored = kit.store.stored_command("p").await.unwrap().unwrap();
    assert!(stored.contains("aGk="), "kept until the result is stored");
    let result = JobResult::new("p", 1, 2, "put_file", raw["args"].clone(), JobState::Ok);
    kit.store.finish_forgetting_data(&result).await.unwrap();
    let stored: Value =
        serde_json::from_str(&kit.store.stored_command("p").await.unwrap().unwrap()).unwrap();
    assert_eq!(stored.get("data"), None);
    assert_eq!(stored["args"]["upload"], json!("p"));
    assert!(kit.store.unfinished().await.unwrap().is_empty());
    assert_eq!(first_result(&kit.store).await.id, "p");
}

#[tokio::test]
async fn a_chunk_without_data_is_an_error_naming_data() {
    let dir = TestDir::new("files-no-data");
    let files = files(&dir);
    let target = dir.join("f");
    let args = put_args(&target, b"hello", 0, "n");
    let err = files.put(args.clone(), None).await.unwrap_err();
    assert!(err.starts_with("`data`: missing"), "{err}");
    let err = files
        .put(args.clone(), Some(Value::Null))
        .await
        .unwrap_err();
    assert!(err.starts_with("`data`: missing"), "{err}");
    assert!(parts_in(&dir).is_empty());
    // An explicit empty chunk is a chunk.
    let answer = files.put(args, b64(b"")).await.unwrap();
    assert_eq!(answer["received"], json!(0));
}

/// The part is listed for the sweep before it is created: an agent that cannot list it (or
/// is killed in between) leaves no part the sweep would never see.
#[tokio::test]
async fn a_part_is_listed_before_it_is_created() {
    let dir = TestDir::new("files-listed-first");
    let mut files = files(&dir);
    fs::write(dir.join("not-a-dir"), b"").unwrap();
    files.uploads_dir = dir.join("not-a-dir").join("uploads");
    let args = put_args(&dir.join("f"), b"hello", 0, "l");
    files.put(args, b64(b"he")).await.unwrap_err();
    assert!(parts_in(&dir).is_empty(), "{:?}", parts_in(&dir));
}

/// What whoever may write the target's directory can put in the part's place between two
/// chunks — a symlink, a hard link, another file — is refused (and removed), and the file it
/// leads to is neither written nor chmodded.
#[cfg(unix)]
#[tokio::test]
async fn a_part_replaced_between_chunks_is_refused_and_not_followed() {
    use std::os::unix::fs::{symlink, PermissionsExt};

    let dir = TestDir::new("files-part-swap");
    let files = files(&dir);
    let target = dir.join("f");
    let content = b"0123456789";
    let victim = dir.join("victim");
    let part = dir.join(".f.jsacc-s.part");
    type Swap = fn(&Path, &Path);
    let swaps: [(&str, Swap); 3] = [
        ("symlink", |victim, part| symlink(victim, part).unwrap()),
        ("hard link", |victim, part| {
            fs::hard_link(victim, part).unwrap()
        }),
        ("another file", |victim, part| {
            let other = part.with_extension("other");
            fs::copy(victim, &other).unwrap();
            fs::rename(&other, part).unwrap();
        }),
    ];
    for (how, swap) in swaps {
        for (offset, end) in [(5, 8), (5, 10)] {
            fs::write(&victim, b"secret").unwrap();
            fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
            let args = put_args(&target, content, 0, "s");
            files.put(args.clone(), b64(&content[..5])).await.unwrap();
            // Moved away rather than removed: a file created now cannot get its inode.
            let moved = part.with_extension("moved");
            fs::rename(&part, &moved).unwrap();
            swap(&victim, &part);
            let next = PutFileArgs { offset, ..args };
            let err = files
                .put(next, b64(&content[offset as usize..end]))
                .await
                .unwrap_err();
            assert!(err.contains("was replaced"), "{how}: {err}");
            assert_eq!(fs::read(&victim).unwrap(), b"secret", "{how}");
            assert_eq!(
                platform::mode_of(&fs::metadata(&victim).unwrap()),
                Some(0o640),
                "{how}"
            );
            assert!(!target.exists(), "{how}");
            assert!(parts_in(&dir).is_empty(), "{how}: removed");
            assert_eq!(
                fs::read_dir(&files.uploads_dir).unwrap().count(),
                0,
                "{how}: unlisted"
            );
            fs::remove_file(&moved).unwrap();
        }
    }
    // A symlink planted before the first chunk is not followed either: it is removed and the
    // upload starts afresh.
    symlink(&victim, &part).unwrap();
    let answer = files
        .put(put_args(&target, content, 0, "s"), b64(&content[..5]))
        .await
        .unwrap();
    assert_eq!(answer["received"], json!(5));
    assert!(fs::symlink_metadata(&part).unwrap().is_file());
    assert_eq!(fs::read(&victim).unwrap(), b"secret");
}

/// A replaced file keeps its owner and group (the agent runs as root here) and its mode; a
/// symlink at the target is replaced, not written through, and its target's mode is not taken.
#[cfg(unix)]
#[tokio::test]
async fn a_replaced_file_keeps_its_owner_and_a_symlink_is_replaced() {
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    let dir = TestDir::new("files-owner");
    let files = files(&dir);
    let target = dir.join("owned");
    fs::write(&target, b"old").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    if fs::metadata(&target).unwrap().uid() == 0 {
        std::os::unix::fs::chown(&target, Some(1234), Some(5678)).unwrap();
    }
    let before = fs::metadata(&target).unwrap();
    upload(&files, &put_args(&target, b"new", 0, "o"), b"new", 10).await;
    let after = fs::metadata(&target).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert_eq!(platform::mode_of(&after), Some(0o640));

    let elsewhere = dir.join("elsewhere");
    fs::write(&elsewhere, b"keep").unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o4755)).unwrap();
    let link = dir.join("link");
    symlink(&elsewhere, &link).unwrap();
    let answer = upload(&files, &put_args(&link, b"file", 0, "l"), b"file", 10).await;
    assert_eq!(answer["mode"], json!("0644"));
    assert!(fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(fs::read(&link).unwrap(), b"file");
    assert_eq!(fs::read(&elsewhere).unwrap(), b"keep");
}

/// `get_file` of a FIFO is refused at once (it blocked a thread forever), and so is a device.
#[cfg(unix)]
#[tokio::test]
async fn get_file_refuses_a_fifo_at_once_and_a_device() {
    let dir = TestDir::new("files-fifo");
    let files = files(&dir);
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let link = dir.join("zero");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    for path in [&fifo, &link] {
        let args = GetFileArgs {
            path: path.to_string_lossy().into_owned(),
            offset: 0,
            length: 10,
            max_wait: 0,
        };
        let err = tokio::time::timeout(Duration::from_secs(10), files.get(args))
            .await
            .expect("answered at once")
            .unwrap_err();
        assert!(err.ends_with("is not a regular file"), "{err}");
    }
}

/// The SHA-256 of `get_file` covers the `size` bytes answered, from the file opened, not what
/// the path holds when the last chunk is read (a file that grew, or a path swapped for
/// `/dev/zero`, was hashed to its end).
#[test]
fn the_sha256_covers_size_bytes_of_the_open_file() {
    use std::io::Write;

    let dir = TestDir::new("files-sha-size");
    let path = dir.join("grows");
    fs::write(&path, b"0123456789").unwrap();
    let (mut file, meta) = open_regular(&path).unwrap();
    let size = meta.len();
    let mut writer = File::options().append(true).open(&path).unwrap();
    writer.write_all(b" and it grows").unwrap();
    assert_eq!(
        sha256_of(&mut file, size, &path).unwrap(),
        sha_hex(b"0123456789")
    );
    assert_eq!(sha256_of(&mut file, 4, &path).unwrap(), sha_hex(b"0123"));
    writer.set_len(5).unwrap();
    let err = sha256_of(&mut file, size, &path).unwrap_err().to_string();
    assert!(err.contains("shrank to 5 bytes from 10"), "{err}");
}

#[test]
fn max_file_size_is_read_from_the_config_file_default_100_mib() {
    use crate::config::{parse_file, Flags};
    let config = |text: &str| {
        let flags = Flags {
            controller: Some("http://127.0.0.1:1".into()),
            gid: Some(1),
            nid: Some(2),
            data_dir: Some("/data".into()),
            ..Default::default()
        };
        let file = parse_file(Path::new("agent.toml"), text).unwrap();
        Config::resolve(flags, file, Some("t".into()), "/opt/js".into()).unwrap()
    };
    assert_eq!(
        Files::new(&config("max_file_size = 10\n")).max_file_size,
        10
    );
    assert_eq!(Files::new(&config("")).max_file_size, 104_857_600);
    // Windows makes `/data` absolute with a drive letter.
    #[cfg(unix)]
    {
        let files = Files::new(&config(""));
        assert_eq!(files.uploads_dir, Path::new("/data/uploads"));
        assert_eq!(files.templates.agentroot, "/data");
    }
}
