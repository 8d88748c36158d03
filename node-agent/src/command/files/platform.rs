//! What differs between Linux and Windows for file transfer: file modes (Unix permission bits;
//! Windows has none, so `mode` is ignored there and answered as `null`), owners (Unix), how a
//! part file is created and opened again without following a link planted in its place, how a
//! file is opened to be read without blocking on a FIFO, and syncing a directory after a rename
//! (Unix only).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
#[cfg(windows)]
use std::os::windows::fs::OpenOptionsExt;

/// Windows' `FILE_FLAG_OPEN_REPARSE_POINT`: open a symlink or junction itself, not what it
/// points to (windows-sys has it behind a feature this crate does not otherwise need).
#[cfg(windows)]
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

/// Creates a part file that must not exist yet (a link or file planted at `path` is an error,
/// never followed), for reading and writing; on Unix with mode 0600.
pub(super) fn create_part(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    options
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK);
    #[cfg(windows)]
    options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    options.open(path)
}

/// Opens an existing part file for reading and writing without following a symlink at `path`
/// (Unix: `O_NOFOLLOW` fails; Windows: the link itself is opened, which the caller refuses as
/// not a regular file) and without blocking on a FIFO. The caller checks what it opened.
pub(super) fn open_part(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    options.custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK);
    #[cfg(windows)]
    options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    options.open(path)
}

/// Opens a file to read it without blocking if it is (or was just swapped for) a FIFO: Unix
/// `O_NONBLOCK`, which reads of a regular file ignore. The caller checks what it opened.
pub(super) fn open_to_read(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    options.custom_flags(nix::libc::O_NONBLOCK);
    options.open(path)
}

/// Which file this is: Unix device and inode, and its owner (a file someone else created where
/// the part was may get the part's freed inode, but not the agent's user as owner, unless that
/// someone is root); to tell the part the agent created from one put in its place. `None` on
/// Windows.
pub(super) type Identity = (u64, u64, u32);

pub(super) fn identity(meta: &Metadata) -> Option<Identity> {
    #[cfg(unix)]
    return Some((meta.dev(), meta.ino(), meta.uid()));
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// How many names a file has (Unix); 1 on Windows. A part has one: a hard link to another
/// file put in its place has two.
pub(super) fn links(meta: &Metadata) -> u64 {
    #[cfg(unix)]
    return meta.nlink();
    #[cfg(not(unix))]
    {
        let _ = meta;
        1
    }
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

/// Gives an open file the owner and group of `old` (the file it replaces), as far as the
/// agent may: an agent not running as root cannot give a file away, so the owner is skipped
/// and the group set only if the agent's user is in it (`EPERM` is not an error). Nothing on
/// Windows. Call it before [`set_mode`]: changing the owner clears setuid and setgid.
pub(super) fn copy_owner(file: &File, old: &Metadata) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::fchown;
        let own = file.metadata()?;
        if (own.uid(), own.gid()) == (old.uid(), old.gid()) {
            return Ok(());
        }
        let refused = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied;
        match fchown(file, Some(old.uid()), Some(old.gid())) {
            Err(e) if refused(&e) => match fchown(file, None, Some(old.gid())) {
                Err(e) if refused(&e) => Ok(()),
                other => other,
            },
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, old);
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
