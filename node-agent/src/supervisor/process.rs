//! One running job process: spawned without a shell in its own process tree (see [`platform`]),
//! fed its stdin, its stdout and stderr read while it runs (tails and log messages, see
//! [`output`]), ended by its exit, its time limit, a `kill` command or the agent stopping.
//!
//! A `kill` is the only gentle ending: the tree is asked to stop (SIGTERM to the process group;
//! on Windows the Job Object is terminated at once) and gets a grace period to exit before it
//! is killed outright. A time limit or the agent stopping kills at once.
//!
//! When the process exits, whatever it left running in its tree is killed too: a job's
//! processes end with it, so nothing is orphaned and its output pipes close.
//!
//! [`platform`]: crate::supervisor::platform
//! [`output`]: crate::supervisor::output

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::logs::logger::JobLogger;
use crate::supervisor::launch::Launch;
use crate::supervisor::output::Readers;
use crate::supervisor::platform::{self, ProcessTree};

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Ending {
    Exited(ExitStatus),
    /// Killed when `max_time` ran out.
    TimedOut,
    /// Killed on request (a `kill` or `killall` command).
    Killed,
    /// Killed because the agent is stopping.
    Cancelled,
    /// The agent lost track of the process (an OS error while waiting for it).
    Lost(std::io::Error),
}

/// A finished run: how it ended, the tails of its output, and what its messages leave in
/// the result.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) ending: Ending,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The last result message (levels 20–23, 30), `""` when none.
    pub(crate) data: String,
    /// Its level, 0 when none.
    pub(crate) level: u8,
    /// The last level-9 message, `""` when none.
    pub(crate) critical: String,
}

/// What ends a run besides the process's own exit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stops<'a> {
    /// `max_time`: killed (at once) when it runs out.
    pub(crate) limit: Option<Duration>,
    /// A kill request: asked to stop, then killed after `kill_grace`.
    pub(crate) kill: &'a CancellationToken,
    pub(crate) kill_grace: Duration,
    /// The agent is stopping: killed at once.
    pub(crate) stop: &'a CancellationToken,
}

/// `JSAGENT_*`: the agent's settings from its environment (`JSAGENT_TOKEN` is a secret).
fn is_agent_setting(key: &std::ffi::OsStr) -> bool {
    key.to_str()
        .is_some_and(|k| k.to_ascii_uppercase().starts_with("JSAGENT_"))
}

/// A spawned process with its tree.
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    tree: ProcessTree,
    pid: u32,
}

impl Process {
    /// Starts the launch; `stdin` says whether data will be written to it (else stdin is null).
    pub(crate) fn spawn(launch: &Launch, stdin: bool) -> std::io::Result<Process> {
        let mut command = Command::new(&launch.program);
        // The agent's own settings (its token among them) are not the job's business.
        for (key, _) in std::env::vars_os() {
            if is_agent_setting(&key) {
                command.env_remove(&key);
            }
        }
        command
            .args(&launch.args)
            .envs(&launch.env)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &launch.workingdir {
            command.current_dir(dir);
        }
        platform::configure(&mut command);
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the process vanished at once"))?;
        let tree = ProcessTree::attach(&child)?;
        Ok(Process { child, tree, pid })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Runs to the end: writes `stdin` (then closes it), reads the output (tails, and messages
    /// to `logger`), and ends the tree as [`Stops`] says.
    pub(crate) async fn run(
        mut self,
        stdin: Option<Vec<u8>>,
        stops: Stops<'_>,
        logger: Option<JobLogger>,
    ) -> Finished {
        if let (Some(mut pipe), Some(data)) = (self.child.stdin.take(), stdin) {
            // Detached: a process that never reads its stdin must not hold up the job.
            tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
            });
        }
        let readers = Readers::start(self.child.stdout.take(), self.child.stderr.take(), logger);

        let ending = tokio::select! {
            status = self.child.wait() => match status {
                Ok(status) => Ending::Exited(status),
                Err(e) => Ending::Lost(e),
            },
            _ = time_limit(stops.limit) => Ending::TimedOut,
            _ = stops.kill.cancelled() => {
                self.terminate(stops).await;
                Ending::Killed
            }
            _ = stops.stop.cancelled() => Ending::Cancelled,
        };
        // A small race remains after a normal exit: the group id could be reused between the
        // reap above and this kill; pids are not reused that quickly in practice.
        self.tree.kill();
        let _ = self.child.wait().await;

        let output = readers.drain().await;
        Finished {
            ending,
            stdout: output.stdout,
            stderr: output.stderr,
            data: output.captured.data,
            level: output.captured.level,
            critical: output.captured.critical,
        }
    }

    /// Asks the tree to stop and waits for the process to exit, at most the grace period (less
    /// if the agent stops meanwhile). The caller then kills what is left of the tree.
    async fn terminate(&mut self, stops: Stops<'_>) {
        tracing::debug!(pid = self.pid, "asking the process tree to stop");
        self.tree.terminate();
        tokio::select! {
            _ = self.child.wait() => {}
            _ = tokio::time::sleep(stops.kill_grace) => {
                tracing::debug!(pid = self.pid, "grace period over; killing the process tree");
            }
            _ = stops.stop.cancelled() => {}
        }
    }
}

async fn time_limit(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// When the process `pid` started (seconds since the epoch), to recognise it later.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let mut system = sysinfo::System::new();
    let pid = sysinfo::Pid::from_u32(pid);
    system.refresh_processes_specifics(
        sysinfo::ProcessesToUpdate::Some(&[pid]),
        true,
        sysinfo::ProcessRefreshKind::nothing(),
    );
    system.process(pid).map(sysinfo::Process::start_time)
}
