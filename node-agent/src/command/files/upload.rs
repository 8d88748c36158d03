//! The upload half of [`super`]: the chunks of a `put_file` into a part file, its check and
//! rename when complete, and the removal of abandoned parts.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use schemas::{FileMode, PutFileArgs};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::platform::Identity;
use super::{
    io_err, open_regular, platform, sha256_of, FileError, Files, ABANDONED_PART, BASE64,
    DEFAULT_MODE,
};

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
        // The part is only ever used through this open file: never reopened by its path, which
        // whoever may write the target's directory could point elsewhere between two chunks.
        let (mut file, received) = match fs::symlink_metadata(&part) {
            Ok(_) => match self.open_part(&part, &args.upload) {
                Ok(file) => {
                    let received = file.metadata().map_err(io_err("read", &part))?.len();
                    (file, received)
                }
                // What was there is removed: a first chunk starts the upload afresh (also after
                // an agent killed between creating a part and recording which file it is).
                Err(FileError::PartReplaced { .. }) if args.offset == 0 => {
                    (self.start_upload(&target, &part)?, 0)
                }
                Err(e) => return Err(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if args.offset > 0 {
                    return self.already_complete(&target, args);
                }
                (self.start_upload(&target, &part)?, 0)
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
        file.seek(SeekFrom::Start(args.offset))
            .and_then(|_| file.write_all(chunk))
            .map_err(io_err("write", &part))?;
        let received = received.max(end);
        if received < args.size {
            return Ok(
                json!({"path": target.display().to_string(), "upload": args.upload, "received": received,
                "size": args.size, "complete": false}),
            );
        }
        let completed = complete(&target, &part, file, args);
        if completed.is_err() {
            let _ = fs::remove_file(&part);
        }
        self.unregister(&part);
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
        let Ok((mut file, meta)) = open_regular(target) else {
            return Err(not_started());
        };
        if meta.len() != args.size
            || !sha256_of(&mut file, args.size, target)?.eq_ignore_ascii_case(&args.sha256)
        {
            return Err(not_started());
        }
        Ok(completed_answer(target, args, platform::mode_of(&meta)))
    }

    /// Creates an upload's part (0600) after removing the target's parts idle for
    /// [`ABANDONED_PART`]. The part is listed for the sweep before it exists (an agent killed
    /// in between leaves a record of nothing, not a part the sweep never sees), then again with
    /// the identity of the file created, which each later chunk checks.
    fn start_upload(&self, target: &Path, part: &Path) -> Result<File, FileError> {
        if let Some(dir) = target.parent() {
            remove_abandoned_parts(dir, &part_prefix(target)?, ABANDONED_PART);
        }
        fs::create_dir_all(&self.uploads_dir).map_err(io_err("create", &self.uploads_dir))?;
        self.list(part, None)?;
        let created = platform::create_part(part).map_err(io_err("create", part));
        let file = match created {
            Ok(file) => file,
            Err(e) => {
                // Whatever is at the part's path is not ours: not for the sweep to remove.
                self.unregister(part);
                return Err(e);
            }
        };
        let listed = file
            .metadata()
            .map_err(io_err("read", part))
            .and_then(|meta| self.list(part, platform::identity(&meta)));
        if let Err(e) = listed {
            let _ = fs::remove_file(part);
            self.unregister(part);
            return Err(e);
        }
        Ok(file)
    }

    /// Opens the part of an upload in progress, checking it is the file [`Self::start_upload`]
    /// created: not a symlink (never followed), a regular file with one name (not a hard link
    /// to another file) and the device, inode and owner recorded at its creation (Unix). Anything else
    /// was put there by someone else: it is removed (unlinked; what a link points to is not
    /// touched) and the chunk refused.
    fn open_part(&self, part: &Path, upload: &str) -> Result<File, FileError> {
        let file = match platform::open_part(part) {
            Ok(file) => Some(file),
            // Unix: `O_NOFOLLOW` refuses a symlink (`ELOOP`).
            Err(_) if fs::symlink_metadata(part).is_ok_and(|m| !m.is_file()) => None,
            Err(e) => return Err(io_err("open", part)(e)),
        };
        let genuine = |file: &File| {
            file.metadata().is_ok_and(|meta| {
                meta.is_file()
                    && platform::links(&meta) == 1
                    && platform::identity(&meta) == self.listed_identity(part)
            })
        };
        match file {
            Some(file) if genuine(&file) => Ok(file),
            _ => {
                tracing::warn!(part = %part.display(), upload, "an upload's part file was replaced; removing it");
                let _ = fs::remove_file(part);
                self.unregister(part);
                Err(FileError::PartReplaced {
                    upload: upload.to_owned(),
                    part: part.display().to_string(),
                })
            }
        }
    }

    /// Lists `part` in `<data_dir>/uploads` (with its identity once it exists). The record is
    /// replaced whole (written beside, then renamed): never read half written.
    fn list(&self, part: &Path, identity: Option<Identity>) -> Result<(), FileError> {
        let listed = Listed {
            part: part.to_string_lossy().into_owned(),
            identity,
        };
        let record = self.record_of(part);
        let fresh = record.with_extension("new");
        let text = serde_json::to_vec(&listed).unwrap_or_default();
        fs::write(&fresh, text)
            .and_then(|()| fs::rename(&fresh, &record))
            .map_err(io_err("write", &record))
    }

    /// The identity of `part` recorded when it was created, if it is listed with one.
    fn listed_identity(&self, part: &Path) -> Option<Identity> {
        let text = fs::read_to_string(self.record_of(part)).ok()?;
        serde_json::from_str::<Listed>(&text).ok()?.identity
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
            // A record being written (renamed into place when whole) is not one to judge; one
            // a crash left half written goes once idle.
            if record.extension().is_some_and(|e| e == "new") {
                if fs::metadata(&record).is_ok_and(|m| idle_for(&m, idle)) {
                    let _ = fs::remove_file(&record);
                }
                continue;
            }
            let Ok(text) = fs::read_to_string(&record) else {
                continue;
            };
            // A record of an older agent holds the path alone.
            let part = serde_json::from_str::<Listed>(&text)
                .map_or_else(|_| PathBuf::from(text), |listed| PathBuf::from(listed.part));
            match fs::symlink_metadata(&part) {
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

/// What `<data_dir>/uploads/<record>` holds: a part in progress, and which file it is (Unix:
/// device, inode and owner; absent until it is created, and on Windows).
#[derive(Debug, Serialize, Deserialize)]
struct Listed {
    part: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<Identity>,
}

/// The chunk of a `put_file`: its `data`, base64. None is an empty chunk only where the file
/// ends (`offset` = `size`: an empty file); elsewhere the chunk is missing — never taken for an
/// empty one, which would answer an upload's progress wrongly.
pub(super) fn decode_chunk(data: Option<Value>, args: &PutFileArgs) -> Result<Vec<u8>, FileError> {
    match data {
        None | Some(Value::Null) if args.offset >= args.size => Ok(Vec::new()),
        None | Some(Value::Null) => Err(FileError::BadData(format!(
            "missing: the command has no chunk for `offset` {} of a file of `size` {} (if the \
             agent restarted, the chunk stored with it is gone: send it again)",
            args.offset, args.size
        ))),
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

/// Checks a complete part, from its open file, against the upload's `size` and `sha256`, gives
/// it the owner and group of the file it replaces (as far as the agent may) and its mode, syncs
/// it and renames it over the target. A symlink at the target is replaced, not written through:
/// the new file is then a new one (mode 0644 unless given, the agent's owner), never taking the
/// mode or owner of whatever the link pointed to.
fn complete(
    target: &Path,
    part: &Path,
    mut file: File,
    args: &PutFileArgs,
) -> Result<Value, FileError> {
    let mismatch = |what, got: String, want: String| FileError::Mismatch {
        path: target.display().to_string(),
        what,
        got,
        want,
    };
    let len = file.metadata().map_err(io_err("read", part))?.len();
    if len != args.size {
        let (got, want) = (format!("{len} bytes"), format!("{} bytes", args.size));
        return Err(mismatch("size", got, want));
    }
    let sha256 = sha256_of(&mut file, args.size, part)?;
    if !sha256.eq_ignore_ascii_case(&args.sha256) {
        return Err(mismatch("sha256", sha256, args.sha256.to_lowercase()));
    }
    let old = fs::symlink_metadata(target).ok().filter(|m| m.is_file());
    if let Some(old) = &old {
        platform::copy_owner(&file, old).map_err(io_err("set the owner of", part))?;
    }
    let old_mode = old.as_ref().and_then(platform::mode_of);
    let mode = args.mode.map(|m| m.0).or(old_mode).unwrap_or(DEFAULT_MODE);
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
