//! `put_file` and `get_file` (DESIGN §11; their args are [`schemas::files`]): files to and from
//! the agent's machine, one chunk per command.
//!
//! An upload's chunks meet in a part file beside the target, `.<name>.jsacc-<upload>.part`,
//! readable only by the agent's user (0600) while incomplete. Each chunk is written at its
//! offset: a chunk that was already written (at-least-once delivery, a client's retry) is
//! written again, unchanged; a chunk past what arrived is refused, naming the offset expected.
//! The chunk that completes the file has the whole checked — size and SHA-256 — then the mode
//! set and the part renamed over the target: the target is never seen half written (the part
//! is in the same directory, so on the same filesystem, where a rename is atomic). A mismatch
//! removes the part and nothing is written. A file, or an upload, over the agent's
//! `max_file_size` is refused.
//!
//! The part is created new, never through a symlink, and each chunk opens it again without
//! following one and checks it is the same file (device and inode, recorded at its creation;
//! one name): whoever may write the target's directory cannot make the agent write, chmod or
//! chown another file by putting a link in the part's place between chunks. The last chunk
//! checks, chowns, chmods and syncs that same open file, then renames it. A replaced file keeps
//! its owner and group (as far as the agent may set them) and, unless `mode` is given, its mode;
//! a symlink at the target is replaced by the file, not written through.
//!
//! `get_file` opens only regular files (a FIFO or device is refused before it is opened, so
//! nothing blocks), and hashes the first `size` bytes of the file it opened, not the path again.
//!
//! Abandoned parts: each part is listed in `<data_dir>/uploads/` while it exists; [`Files::sweep`]
//! removes parts idle for [`STALE_PART`] (at start, then hourly), and a new upload to a target
//! removes that target's parts idle for [`ABANDONED_PART`].
//!
//! All of it is blocking file I/O: it runs on tokio's blocking threads, one `put_file` at a time.
//!
//! Here: the commands and `get_file`; [`upload`]: the chunks of a `put_file` and the part
//! files; [`platform`]: file modes and what else differs on Windows.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use schemas::{FileMode, GetFileArgs, PutFileArgs};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::supervisor::launch::Templates;

mod platform;
mod upload;

/// A part idle this long is removed by the sweep (at start and hourly): the upload was given up.
pub(crate) const STALE_PART: Duration = Duration::from_secs(24 * 3600);
/// A new upload to a target removes that target's other parts idle this long.
pub(crate) const ABANDONED_PART: Duration = Duration::from_secs(3600);
/// How often [`Files::sweep_periodically`] looks for stale parts.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Mode of a new file when `put_file` gives none (an existing target keeps its own).
const DEFAULT_MODE: u32 = 0o644;

/// The file commands, with the agent's settings. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    templates: Templates,
    max_file_size: u64,
    /// `<data_dir>/uploads`: one small file per part in progress, holding the part's path.
    uploads_dir: PathBuf,
    /// One `put_file` (or sweep) at a time. The chunks of one upload come one after another
    /// anyway; serializing them all makes a part's check-then-write safe from a duplicate
    /// delivered at the same moment, at the cost of uploads to different files taking turns.
    writing: Arc<tokio::sync::Mutex<()>>,
}

/// Why a file command failed: the text of its `ERROR` result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error("`path` `{0}` is not absolute (after $agentroot, $root and $tmp are replaced)")]
    NotAbsolute(String),
    #[error("`path` `{0}` names no file")]
    NoFileName(String),
    #[error("{what} of {size} bytes is over the agent's max_file_size of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("`data`: {0}")]
    BadData(String),
    #[error("the chunk at `offset` {offset} of {len} bytes ends past `size` {size}")]
    PastSize { offset: u64, len: u64, size: u64 },
    #[error("chunk at `offset` {offset} of upload `{upload}` is out of order: expected offset {expected}")]
    OutOfOrder {
        upload: String,
        offset: u64,
        expected: u64,
    },
    #[error(
        "upload `{upload}` to {path} is not in progress (never started, or removed after being \
         idle): expected `offset` 0, got {offset}"
    )]
    NotStarted {
        upload: String,
        path: String,
        offset: u64,
    },
    #[error("upload to {path} failed: the file received has {what} {got}, but the upload said {want}; nothing was written")]
    Mismatch {
        path: String,
        what: &'static str,
        got: String,
        want: String,
    },
    #[error("`offset` {offset} is past the end of {path} ({size} bytes)")]
    OffsetPastEnd {
        offset: u64,
        path: String,
        size: u64,
    },
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error(
        "the part file {part} of upload `{upload}` was replaced (it is not the file the agent \
         created; removed): send the upload again from `offset` 0"
    )]
    PartReplaced { upload: String, part: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("the file task failed: {0}")]
    Task(String),
}

/// Maps an I/O error on `path` to a [`FileError::Io`] saying what was being done.
fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

impl Files {
    pub(crate) fn new(config: &Config) -> Files {
        Files {
            templates: Templates::of(config),
            max_file_size: config.max_file_size,
            uploads_dir: config.data_dir.join("uploads"),
            writing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// `put_file`: writes one chunk (`data`, base64) and answers the upload's progress.
    pub(crate) async fn put(
        &self,
        args: PutFileArgs,
        data: Option<Value>,
    ) -> Result<Value, String> {
        let _writing = self.writing.lock().await;
        let files = self.clone();
        blocking(move || {
            let chunk = upload::decode_chunk(data, &args)?;
            files.put_chunk(&args, &chunk)
        })
        .await
    }

    /// `get_file`: reads one chunk.
    pub(crate) async fn get(&self, args: GetFileArgs) -> Result<Value, String> {
        let files = self.clone();
        blocking(move || files.get_chunk(&args)).await
    }

    /// Removes the parts idle for [`STALE_PART`] now, then every [`SWEEP_EVERY`] until `shutdown`.
    pub(crate) async fn sweep_periodically(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let _writing = self.writing.lock().await;
            let files = self.clone();
            if let Err(e) = blocking(move || Ok(json!(files.sweep(STALE_PART)))).await {
                tracing::warn!(error = %e, "the sweep of abandoned uploads failed; will retry");
            }
        }
    }

    /// The templated, absolute path of a command.
    fn resolve(&self, path: &str) -> Result<PathBuf, FileError> {
        let resolved = PathBuf::from(self.templates.apply(path));
        if !resolved.is_absolute() {
            return Err(FileError::NotAbsolute(resolved.display().to_string()));
        }
        Ok(resolved)
    }

    fn get_chunk(&self, args: &GetFileArgs) -> Result<Value, FileError> {
        let path = self.resolve(&args.path)?;
        let (mut file, meta) = open_regular(&path)?;
        let size = meta.len();
        if size > self.max_file_size {
            let limit = self.max_file_size;
            return Err(FileError::TooLarge {
                what: "the file",
                size,
                limit,
            });
        }
        if args.offset > size {
            let (offset, path) = (args.offset, path.display().to_string());
            return Err(FileError::OffsetPastEnd { offset, path, size });
        }
        let want = args.length.min(size - args.offset);
        let mut chunk = Vec::with_capacity(want as usize);
        file.seek(SeekFrom::Start(args.offset))
            .and_then(|_| (&file).take(want).read_to_end(&mut chunk))
            .map_err(io_err("read", &path))?;
        let eof = args.offset + chunk.len() as u64 >= size;
        let mode = platform::mode_of(&meta).map(|m| FileMode(m).to_string());
        let mut answer = json!({"path": path.display().to_string(), "size": size, "mode": mode, "offset": args.offset,
            "data": BASE64.encode(&chunk), "eof": eof});
        if eof {
            answer["sha256"] = Value::String(sha256_of(&mut file, size, &path)?);
        }
        Ok(answer)
    }
}

/// Runs file work on a blocking thread; the error is the result's reason.
async fn blocking<F>(work: F) -> Result<Value, String>
where
    F: FnOnce() -> Result<Value, FileError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(e) => Err(FileError::Task(e.to_string()).to_string()),
    }
}

/// Opens a regular file (a symlink to one is followed) to read it, with its metadata. Anything
/// else — a directory, a FIFO, a device such as `/dev/zero` — is refused before it is opened, so
/// a FIFO never blocks a thread; and the open file is checked again, since the path may have
/// been swapped in between (opened without blocking: [`platform::open_to_read`]).
fn open_regular(path: &Path) -> Result<(File, Metadata), FileError> {
    let not_a_file = || FileError::NotAFile(path.display().to_string());
    if !fs::metadata(path).map_err(io_err("open", path))?.is_file() {
        return Err(not_a_file());
    }
    let file = platform::open_to_read(path).map_err(io_err("open", path))?;
    let meta = file.metadata().map_err(io_err("read", path))?;
    if !meta.is_file() {
        return Err(not_a_file());
    }
    Ok((file, meta))
}

/// SHA-256 of the first `size` bytes of an open file, as 64 lowercase hex digits: never more
/// (a file that grows, or is not what it was, is not read to its end), and an error if it has
/// fewer (it shrank).
fn sha256_of(file: &mut File, size: u64, path: &Path) -> Result<String, FileError> {
    let mut hasher = Sha256::new();
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| io::copy(&mut (&*file).take(size), &mut hasher))
        .map_err(io_err("read", path))?;
    if read < size {
        let shrank = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("it shrank to {read} bytes from {size} while it was read"),
        );
        return Err(io_err("read", path)(shrank));
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests;
