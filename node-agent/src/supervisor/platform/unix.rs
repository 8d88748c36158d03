//! Unix: each job's process leads its own process group (`setpgid(0, 0)` at spawn), so
//! `killpg` reaches every descendant that did not deliberately leave the group.

use std::io;
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Makes the spawned process the leader of a new process group.
pub(crate) fn configure(command: &mut Command) {
    command.process_group(0);
}

/// The process group of a spawned job.
#[derive(Debug)]
pub(crate) struct ProcessTree {
    pgid: Pid,
}

impl ProcessTree {
    pub(crate) fn attach(child: &Child) -> io::Result<ProcessTree> {
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the process has already been reaped"))?;
        Ok(ProcessTree { pgid: pid_of(pid) })
    }

    /// SIGTERMs every process of the group, asking it to stop. A group that is already gone is
    /// not an error.
    pub(crate) fn terminate(&self) {
        signal_group(self.pgid, Signal::SIGTERM);
    }

    /// SIGKILLs every process of the group. A group that is already gone is not an error.
    pub(crate) fn kill(&self) {
        kill_group(self.pgid);
    }
}

/// Kills the process group a previous agent started as `pid`; the caller has checked that the
/// process is still the one it started (same start time).
pub(crate) fn kill_orphan(pid: u32) {
    kill_group(pid_of(pid));
}

fn kill_group(pgid: Pid) {
    signal_group(pgid, Signal::SIGKILL);
}

fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "cannot signal a process group")
        }
    }
}

fn pid_of(pid: u32) -> Pid {
    // Pids fit in i32 on every unix; a u32 pid comes from the kernel through std.
    Pid::from_raw(pid as i32)
}

/// The signal that ended the process, if one did.
pub(crate) fn exit_signal(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn terminate_signal() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Directories searched for a command after PATH: none on unix (`execvp` searches PATH only).
pub(crate) fn system_dirs() -> Vec<std::path::PathBuf> {
    Vec::new()
}

/// Makes a directory of the agent's (its data: job records, outbox, logs) readable by its owner
/// only: 0700.
pub(crate) fn restrict_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_data_dir_is_the_owners_only() {
        let dir = std::env::temp_dir().join(format!("jsagent-restrict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        super::restrict_dir(&dir).expect("restrict");
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(mode & 0o777, 0o700);
    }
}
