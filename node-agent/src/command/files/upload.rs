//! The upload half of [`super`]: the chunks of a `put_file` into a part file, its check and
//! rename when complete, and the removal of abandoned parts.

use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use schemas::{FileMode, PutFileArgs};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{io_err, platform, sha256_of, FileError, Files, ABANDONED_PART, BASE64, DEFAULT_MODE};

impl Files {
    /// `put_file` on a blocking thread: writes one chunk and answers the upload's progress.
    pub(super) fn put_chunk(&self, args: &PutFileArgs, chunk: &[u8]) -> Result<Value, FileError> {
        let target = self.resolve(&args.path)?;
        if args.size > self.max_file_size {
            return Err(FileError::TooLarge {
                what: "a file",
                size: args.size,
                limit: self.max_file_size,
            });
        }
        let len = chunk.len() as u64;
        let end = args.offset.saturating_add(len);
        if end > args.size {
            let (offset, size) = (args.offset, args.size);
            return Err(FileError::PastSize { offset, len, size });
        }
        if fs::metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Err(FileError::NotAFile(target.display().to_string()));
        }
        let part = part_path(&target, &args.upload)?;
        let received = match fs::metadata(&part) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if args.offset > 0 {
                    return self.already_complete(&target, args);
                }
                self.start_upload(&target, &part)?;
                0
            }
            Err(e) => return Err(io_err("read", &part)(e)),
        };
        if args.offset > received {
            return Err(FileError::OutOfOrder {
                upload: args.upload.clone(),
                offset: args.offset,
                expected: received,
            });
        }
        write_at(&part, args.offset, chunk)?;
        let received = received.max(end);
        if received < args.size {
            return Ok(
                json!({"path": target.display().to_string(), "upload": args.upload, "received": received,
                "size": args.size, "complete": false}),
            );
        }
        let completed = complete(&target, &part, args);
        self.unregister(&part);
        if completed.is_err() {
            let _ = fs::remove_file(&part);
        }
        completed
    }

    /// A chunk past offset 0 of an upload without a part: the repeat of the chunk that
    /// completed it (harmless when the target holds that file), or an error.
    fn already_complete(&self, target: &Path, args: &PutFileArgs) -> Result<Value, FileError> {
        let not_started = || FileError::NotStarted {
            upload: args.upload.clone(),
            path: target.display().to_string(),
            offset: args.offset,
        };
        match fs::metadata(target) {
            Ok(meta) if meta.is_file() && meta.len() == args.size => {}
            _ => return Err(not_started()),
        }
        if !sha256_of(target)?.eq_ignore_ascii_case(&args.sha256) {
            return Err(not_started());
        }
        let mode = fs::metadata(target)
            .ok()
            .and_then(|m| platform::mode_of(&m));
        Ok(completed_answer(target, args, mode))
    }

    /// Creates an upload's part (0600), listed for the sweep, after removing the target's
    /// parts idle for [`ABANDONED_PART`].
    fn start_upload(&self, target: &Path, part: &Path) -> Result<(), FileError> {
        if let Some(dir) = target.parent() {
            remove_abandoned_parts(dir, &part_prefix(target)?, ABANDONED_PART);
        }
        platform::create_private(part).map_err(io_err("create", part))?;
        fs::create_dir_all(&self.uploads_dir).map_err(io_err("create", &self.uploads_dir))?;
        let record = self.record_of(part);
        let listed = fs::write(&record, part.to_string_lossy().as_bytes());
        listed.map_err(io_err("write", &record))
    }

    /// The record listing `part` in `<data_dir>/uploads`.
    fn record_of(&self, part: &Path) -> PathBuf {
        let digest = Sha256::digest(part.to_string_lossy().as_bytes());
        self.uploads_dir.join(&format!("{digest:x}")[..32])
    }

    fn unregister(&self, part: &Path) {
        let _ = fs::remove_file(self.record_of(part));
    }

    /// Removes listed parts idle for `idle` (and records of parts already gone); answers how
    /// many parts it removed.
    pub(crate) fn sweep(&self, idle: Duration) -> usize {
        let Ok(records) = fs::read_dir(&self.uploads_dir) else {
            return 0;
        };
        let mut removed = 0;
        for record in records.flatten().map(|e| e.path()) {
            let Ok(part) = fs::read_to_string(&record).map(PathBuf::from) else {
                continue;
            };
            match fs::metadata(&part) {
                Ok(meta) if !idle_for(&meta, idle) => continue,
                Ok(_) => {
                    tracing::info!(part = %part.display(), "removing an abandoned upload");
                    if fs::remove_file(&part).is_err() {
                        continue;
                    }
                    removed += 1;
                }
                Err(_) => {}
            }
            let _ = fs::remove_file(&record);
        }
        removed
    }
}

/// The chunk of a `put_file`: its `data`, base64 (none: an empty chunk).
pub(super) fn decode_chunk(data: Option<Value>) -> Result<Vec<u8>, FileError> {
    match data {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => BASE64
            .decode(text.as_bytes())
            .map_err(|e| FileError::BadData(format!("not base64: {e}"))),
        Some(_) => Err(FileError::BadData(
            "expected the chunk as a base64 string".into(),
        )),
    }
}

/// `.<name>.jsacc-`: how the part files of `target` begin.
fn part_prefix(target: &Path) -> Result<String, FileError> {
    let name = target
        .file_name()
        .ok_or_else(|| FileError::NoFileName(target.display().to_string()))?;
    Ok(format!(".{}.jsacc-", name.to_string_lossy()))
}

/// `<dir>/.<name>.jsacc-<upload>.part`, beside `target`.
fn part_path(target: &Path, upload: &str) -> Result<PathBuf, FileError> {
    let name = format!("{}{upload}.part", part_prefix(target)?);
    Ok(target.with_file_name(name))
}

fn idle_for(meta: &fs::Metadata, idle: Duration) -> bool {
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age >= idle)
}

/// Removes the parts in `dir` whose names begin with `prefix` and that were idle for `idle`.
fn remove_abandoned_parts(dir: &Path, prefix: &str, idle: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(prefix) && name.ends_with(".part")) {
            continue;
        }
        if entry.metadata().is_ok_and(|m| idle_for(&m, idle)) {
            tracing::info!(part = %entry.path().display(), "removing an abandoned upload");
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn write_at(part: &Path, offset: u64, chunk: &[u8]) -> Result<(), FileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(part)
        .map_err(io_err("open", part))?;
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.write_all(chunk))
        .map_err(io_err("write", part))
}

/// Checks a complete part against the upload's `size` and `sha256`, sets its mode and renames
/// it over the target.
fn complete(target: &Path, part: &Path, args: &PutFileArgs) -> Result<Value, FileError> {
    let mismatch = |what, got: String, want: String| FileError::Mismatch {
        path: target.display().to_string(),
        what,
        got,
        want,
    };
    let len = fs::metadata(part).map_err(io_err("read", part))?.len();
    if len != args.size {
        let (got, want) = (format!("{len} bytes"), format!("{} bytes", args.size));
        return Err(mismatch("size", got, want));
    }
    let sha256 = sha256_of(part)?;
    if !sha256.eq_ignore_ascii_case(&args.sha256) {
        return Err(mismatch("sha256", sha256, args.sha256.to_lowercase()));
    }
    let old_mode = fs::metadata(target)
        .ok()
        .and_then(|m| platform::mode_of(&m));
    let mode = args.mode.map(|m| m.0).or(old_mode).unwrap_or(DEFAULT_MODE);
    let file = OpenOptions::new()
        .write(true)
        .open(part)
        .map_err(io_err("open", part))?;
    platform::set_mode(&file, mode).map_err(io_err("set the mode of", part))?;
    file.sync_all().map_err(io_err("sync", part))?;
    drop(file);
    fs::rename(part, target).map_err(io_err("rename the upload over", target))?;
    platform::sync_parent(target);
    Ok(completed_answer(
        target,
        args,
        platform::mode_of_value(mode),
    ))
}

fn completed_answer(target: &Path, args: &PutFileArgs, mode: Option<u32>) -> Value {
    json!({"path": target.display().to_string(), "upload": args.upload, "received": args.size, "size": args.size,
        "complete": true, "sha256": args.sha256.to_lowercase(),
        "mode": mode.map(|m| FileMode(m).to_string())})
}
