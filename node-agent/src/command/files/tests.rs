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
    use crate::store::{OutboxKind, Received};
    use schemas::{JobResult, JobState};

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
    let result = loop {
        let rows = kit.store.outbox_take(OutboxKind::Result, 10).await.unwrap();
        if let Some(row) = rows.first() {
            break serde_json::from_str::<JobResult>(&row.body).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), kit.store.outbox_added())
            .await
            .expect("a result within 30 s");
    };
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
