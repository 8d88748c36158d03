//! What differs between Linux and Windows for file transfer: file modes (Unix permission bits;
//! Windows has none, so `mode` is ignored there and answered as `null`), a part created readable
//! only by the agent's user, and syncing a directory after a rename (Unix only).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

/// Creates (or empties) a part file; on Unix with mode 0600.
pub(super) fn create_private(path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).map(drop)
}

/// The permission bits of a file (Unix); `None` on Windows.
pub(super) fn mode_of(meta: &Metadata) -> Option<u32> {
    #[cfg(unix)]
    return Some(meta.permissions().mode() & 0o7777);
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The mode a file was given, as answered: `mode` on Unix, `None` on Windows.
pub(super) fn mode_of_value(mode: u32) -> Option<u32> {
    #[cfg(unix)]
    return Some(mode);
    #[cfg(not(unix))]
    {
        let _ = mode;
        None
    }
}

/// Sets the permission bits of an open file (Unix); nothing on Windows.
pub(super) fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    return file.set_permissions(std::fs::Permissions::from_mode(mode));
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// Makes a rename into `target`'s directory durable (Unix: fsync of the directory). Best effort:
/// the file itself was synced, and a failure here loses nothing the caller can act on.
pub(super) fn sync_parent(target: &Path) {
    #[cfg(unix)]
    if let Some(dir) = target.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    #[cfg(not(unix))]
    let _ = target;
}
