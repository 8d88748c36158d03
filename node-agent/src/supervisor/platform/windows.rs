//! Windows: each job's process is put in its own Job Object, so `TerminateJobObject` ends its
//! whole tree, and closing the job (when the agent drops it, or dies) kills what is left
//! (`JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`). The process is assigned right after it is spawned; a
//! child it starts in that instant escapes the job (resuming a suspended process would need its
//! main thread handle, which std does not expose).
#![allow(unsafe_code)]

use std::io;
use std::process::ExitStatus;

use tokio::process::{Child, Command};
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, TerminateJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};

/// Nothing to set before the spawn on Windows.
pub(crate) fn configure(_command: &mut Command) {}

/// The Job Object of a spawned job; closed (killing what is left) on drop.
#[derive(Debug)]
pub(crate) struct ProcessTree {
    job: HANDLE,
}

// SAFETY: a Job Object handle may be used and closed from any thread.
unsafe impl Send for ProcessTree {}
// SAFETY: the only operations (TerminateJobObject, CloseHandle on drop) are thread-safe.
unsafe impl Sync for ProcessTree {}

impl ProcessTree {
    pub(crate) fn attach(child: &Child) -> io::Result<ProcessTree> {
        let process = child
            .raw_handle()
            .ok_or_else(|| io::Error::other("the process has already been reaped"))?;
        // SAFETY: null attributes and name are allowed; the handle is checked below.
        let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if job.is_null() {
            return Err(io::Error::last_os_error());
        }
        let tree = ProcessTree { job };
        let mut limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: `limits` is a valid JOBOBJECT_EXTENDED_LIMIT_INFORMATION of the size passed.
        let set = unsafe {
            SetInformationJobObject(
                tree.job,
                JobObjectExtendedLimitInformation,
                std::ptr::from_ref(&limits).cast(),
                std::mem::size_of_val(&limits) as u32,
            )
        };
        // SAFETY: both handles are open; `process` is owned by `child`, which outlives this call.
        if set == 0 || unsafe { AssignProcessToJobObject(tree.job, process as HANDLE) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(tree)
    }

    /// Asks the tree to stop. Windows has no SIGTERM for arbitrary processes (console control
    /// events reach only console process groups sharing the agent's console), so this
    /// terminates the job at once, like [`ProcessTree::kill`].
    pub(crate) fn terminate(&self) {
        self.kill();
    }

    /// Terminates every process in the job.
    pub(crate) fn kill(&self) {
        // SAFETY: `job` is an open Job Object handle owned by self.
        if unsafe { TerminateJobObject(self.job, 1) } == 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot terminate a job object");
        }
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        // SAFETY: `job` is open and closed only here.
        unsafe { CloseHandle(self.job) };
    }
}

/// Kills a process a previous agent started; the caller has checked its start time. Its Job
/// Object died with that agent, which already killed the rest of the tree.
pub(crate) fn kill_orphan(pid: u32) {
    let mut system = sysinfo::System::new();
    let pid = sysinfo::Pid::from_u32(pid);
    system.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    if let Some(process) = system.process(pid) {
        process.kill();
    }
}

/// Windows has no exit signals.
pub(crate) fn exit_signal(_status: &ExitStatus) -> Option<i32> {
    None
}

/// Resolves on Ctrl-C, Ctrl-Break, console close or system shutdown.
pub(crate) async fn terminate_signal() -> io::Result<()> {
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
    let (mut c, mut b, mut close, mut shutdown) =
        (ctrl_c()?, ctrl_break()?, ctrl_close()?, ctrl_shutdown()?);
    tokio::select! {
        _ = c.recv() => {}
        _ = b.recv() => {}
        _ = close.recv() => {}
        _ = shutdown.recv() => {}
    }
    Ok(())
}

/// Directories searched for a command after PATH, as `CreateProcess` searches them: the system
/// directory and the Windows directory. A service may run with a PATH that lacks them (Wine's
/// service manager does in a new prefix), and `cmd` must still be found.
pub(crate) fn system_dirs() -> Vec<std::path::PathBuf> {
    let root = std::env::var_os("SystemRoot")
        .or_else(|| std::env::var_os("windir"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(r"C:\Windows"));
    vec![root.join("System32"), root]
}

/// On Windows a new directory inherits its parent's ACL (a service's data dir under
/// ProgramData is not writable by users); nothing to change here.
pub(crate) fn restrict_dir(_dir: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}
