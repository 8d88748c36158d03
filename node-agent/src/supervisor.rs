//! The process manager (DESIGN §6): runs `execute` / `execute_js_py` / `execute_js_lua` jobs,
//! at most `max_jobs` at once (the rest wait their turn, in order), jobs that name the same
//! `queue` one after another, and turns each run into a result stored with
//! [`Store::finish`].
//!
//! A job's life: `QUEUED` (stored by the poller) → waits for a slot → launch prepared (a bad
//! command ends here, `ERROR` with the reason) → spawned, `RUNNING` with its pid recorded → ends
//! `OK`, `ERROR`, or `TIMEOUT` after `max_time`. A `kill` or `killall` ([`Supervisor::kill`])
//! ends it `KILLED` at any point before that, without starting it if it was still waiting.
//!
//! Each job is owned by its own task, which alone touches its process; the [`Registry`] holds
//! the jobs by id so a kill can reach their owners.
//!
//! Stopping the agent ([`Supervisor::shutdown`]) kills every running tree and reports those jobs
//! `ERROR` "agent stopped" at once; jobs still waiting for a slot stay `QUEUED` in the store and
//! run when the agent starts again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::{Command, ExecuteArgs, JobResult, JobState};
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::launch::{Launch, Launcher, Program};
use crate::platform;
use crate::process::{self, Ending, Finished, Process, Stops};
use crate::registry::{Claim, Killer, Registry, Ticket};
use crate::store::{Started, Store};

mod kill;

/// Data of a job killed because the agent stopped.
pub const AGENT_STOPPED: &str = "agent stopped";

/// How long a killed job's process tree has to exit after SIGTERM before it gets SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// A job for the process manager.
#[derive(Debug, Clone)]
pub struct Job {
    pub command: Command,
    pub args: ExecuteArgs,
    pub program: Program,
}

/// Handle to the process manager; clones share it.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    launcher: Launcher,
    gid: u64,
    nid: u64,
    slots: Arc<Semaphore>,
    /// Serial queues by name. A std mutex: it is held only to look up an entry, never across
    /// an await.
    queues: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    registry: Registry,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// What a job holds while it runs.
struct Turn {
    _queue: Option<OwnedMutexGuard<()>>,
    _slot: OwnedSemaphorePermit,
}

/// How waiting for a turn ended.
enum Waited {
    Turn(Turn),
    /// A kill claimed the job while it waited.
    Killed,
    /// The agent is stopping.
    Stopping,
}

impl Supervisor {
    pub fn new(config: &Config, store: Store) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                store,
                launcher: Launcher::new(config),
                gid: config.gid,
                nid: config.nid,
                slots: Arc::new(Semaphore::new(config.max_jobs)),
                queues: Mutex::new(HashMap::new()),
                registry: Registry::default(),
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Starts a stored job; it runs when a slot (and its queue) is free. From now on a `kill`
    /// finds it.
    pub fn submit(&self, job: Job) {
        let _span = tracing::info_span!("job", id = %job.command.id).entered();
        let Some(ticket) = self.inner.registry.register(&job.command.id) else {
            // The store lets an id in once, so this is the same command again: the job already
            // held answers for it.
            tracing::error!("a job with this id is held already; not running it twice");
            return;
        };
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.run(job, ticket).await }.in_current_span());
    }

    /// Kills every running process tree, reports those jobs, and waits (at most `grace`) for
    /// their results to be stored. Jobs still waiting stay `QUEUED`.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "jobs did not finish stopping in time; they will be reported on the next start"
            );
        }
    }

    async fn run(&self, job: Job, ticket: Ticket) {
        let turn = match self.wait_turn(&job, &ticket).await {
            // The job stays QUEUED and runs on the next start.
            Waited::Stopping => return,
            Waited::Turn(turn) if ticket.start() => Some(turn),
            // Claimed by a kill while waiting, or just as its turn came: it never starts.
            Waited::Turn(_) | Waited::Killed => None,
        };
        let (result, claim, _turn) = match turn {
            Some(turn) => {
                let (result, claim) = self.execute(&job, ticket).await;
                (result, claim, Some(turn))
            }
            None => {
                let claim = ticket.leave();
                (self.killed_queued(&job, claim.as_ref()), claim, None)
            }
        };
        tracing::debug!(state = result.state.as_str(), "job finished");
        if let Err(e) = self.inner.store.finish(&result).await {
            tracing::error!(error = %e, "cannot store a job's result");
        }
        if let Some(claim) = claim {
            claim.answer(result.state);
        }
    }

    async fn wait_turn(&self, job: &Job, ticket: &Ticket) -> Waited {
        let queue = job.args.queue.as_ref().map(|name| self.queue(name));
        let slots = self.inner.slots.clone();
        let turn = async move {
            let queue = match queue {
                Some(q) => Some(q.lock_owned().await),
                None => None,
            };
            match slots.acquire_owned().await {
                Ok(slot) => Waited::Turn(Turn {
                    _queue: queue,
                    _slot: slot,
                }),
                // The slots are never closed; if they were, nothing could run any more.
                Err(_) => Waited::Stopping,
            }
        };
        tokio::select! {
            biased;
            _ = ticket.killed().cancelled() => Waited::Killed,
            _ = self.inner.stop.cancelled() => Waited::Stopping,
            waited = turn => waited,
        }
    }

    fn queue(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut queues = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget queues nobody holds, so the map stays as small as the set of busy queues.
        queues.retain(|_, q| Arc::strong_count(q) > 1);
        queues.entry(name.to_owned()).or_default().clone()
    }

    /// Runs a job whose turn came, and leaves the registry once it has ended: its result, and
    /// the claim of a kill that came before its end (to be answered once the result is stored).
    async fn execute(&self, job: &Job, ticket: Ticket) -> (JobResult, Option<Claim>) {
        let inner = &self.inner;
        let stdin = stdin_bytes(job.command.data.as_ref());
        // Durably RUNNING before the spawn: a crash in between must not run it twice.
        if let Err(e) = inner.store.starting(&job.command.id).await {
            let reason = format!("cannot record the job's start, so it was not started: {e}");
            return (self.error(job, reason), ticket.leave());
        }
        // `_launch` is kept until the end: it removes an inline script when dropped.
        let (_launch, process) = match self.spawn(job, stdin.is_some()) {
            Ok(spawned) => spawned,
            Err(reason) => return (self.error(job, reason), ticket.leave()),
        };
        let starttime = schemas::now_ms();
        let clock = Instant::now();
        let started = Started {
            started_ms: starttime,
            pid: process.pid(),
            pid_start_time: process::start_time(process.pid()),
        };
        if let Err(e) = inner.store.start(&job.command.id, started).await {
            tracing::warn!(error = %e, "cannot record a started job; a restart will not find its process");
        }
        tracing::debug!(pid = process.pid(), "job started");
        let limit = u64::try_from(job.args.max_time)
            .ok()
            .filter(|&s| s > 0)
            .map(Duration::from_secs);
        let stops = Stops {
            limit,
            kill: ticket.killed(),
            kill_grace: KILL_GRACE,
            stop: &inner.stop,
        };
        let finished = process.run(stdin, stops).await;
        let claim = ticket.leave();
        let mut result = self.result_of(job, finished, claim.as_ref());
        result.starttime = starttime;
        result.time = clock.elapsed().as_millis() as u64;
        (result, claim)
    }

    /// Prepares and spawns a job's process; the error is the reason the job cannot start.
    fn spawn(&self, job: &Job, stdin: bool) -> Result<(Launch, Process), String> {
        let launch = self
            .inner
            .launcher
            .prepare(&job.command.id, job.program, &job.args)
            .map_err(|e| e.to_string())?;
        match Process::spawn(&launch, stdin) {
            Ok(process) => Ok((launch, process)),
            Err(e) => Err(format!("cannot start {}: {e}", launch.program.display())),
        }
    }

    fn result_of(&self, job: &Job, finished: Finished, claim: Option<&Claim>) -> JobResult {
        let (state, exit_code, data) = match finished.ending {
            Ending::Exited(status) => match status.code() {
                Some(0) => (JobState::Ok, Some(0), String::new()),
                Some(code) => (JobState::Error, Some(code), String::new()),
                None => {
                    let signal = platform::exit_signal(&status)
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default();
                    (JobState::Error, None, format!("killed by signal{signal}"))
                }
            },
            Ending::TimedOut => (
                JobState::Timeout,
                None,
                format!("killed after max_time {} s", job.args.max_time),
            ),
            Ending::Killed => (JobState::Killed, None, killed_by(claim, "")),
            Ending::Cancelled => (JobState::Error, None, AGENT_STOPPED.to_owned()),
            Ending::Lost(e) => (
                JobState::Error,
                None,
                format!("lost track of the process: {e}"),
            ),
        };
        let mut result = self.result(job, state);
        result.exit_code = exit_code;
        result.data = Value::String(data);
        result.streams = vec![finished.stdout, finished.stderr];
        result
    }

    /// The result of a job killed before it started.
    fn killed_queued(&self, job: &Job, claim: Option<&Claim>) -> JobResult {
        let mut result = self.result(job, JobState::Killed);
        result.data = Value::String(killed_by(claim, " before it started"));
        result
    }

    fn result(&self, job: &Job, state: JobState) -> JobResult {
        self.result_for(&job.command, state)
    }

    /// A result for a command, with no output.
    fn result_for(&self, c: &Command, state: JobState) -> JobResult {
        JobResult::new(
            &c.id,
            self.inner.gid,
            self.inner.nid,
            &c.cmd,
            c.args.clone(),
            state,
        )
    }

    fn error(&self, job: &Job, reason: String) -> JobResult {
        let mut result = self.result(job, JobState::Error);
        result.data = Value::String(reason);
        result
    }
}

/// Data of a killed job: `killed by kill command <id>`, then `suffix`.
fn killed_by(claim: Option<&Claim>, suffix: &str) -> String {
    match claim {
        Some(Claim {
            by: Killer { cmd, id },
            ..
        }) => format!("killed by {cmd} command {id}{suffix}"),
        // A kill always leaves its claim; this is only a fallback.
        None => format!("killed{suffix}"),
    }
}

/// A string is passed as-is, any other JSON value serialized; no data means no stdin.
fn stdin_bytes(data: Option<&Value>) -> Option<Vec<u8>> {
    match data? {
        Value::Null => None,
        Value::String(s) => Some(s.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Flags};
    use crate::store::{OutboxKind, Received};
    use serde_json::json;
    use std::path::PathBuf;

    pub(super) struct Fixture {
        pub(super) dir: PathBuf,
        pub(super) store: Store,
        pub(super) supervisor: Supervisor,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn fixture(name: &str) -> Fixture {
        fixture_with(name, None).await
    }

    /// A supervisor in its own data dir; `max_jobs` defaults to the config's default.
    pub(super) async fn fixture_with(name: &str, max_jobs: Option<usize>) -> Fixture {
        let dir = std::env::temp_dir().join(format!("jsagent-sup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let flags = Flags {
            controller: Some("http://127.0.0.1:1".into()),
            gid: Some(1),
            nid: Some(2),
            data_dir: Some(dir.clone()),
            max_jobs,
            ..Default::default()
        };
        let config = Config::resolve(
            flags,
            FileConfig::default(),
            Some("t".into()),
            "/opt/js".into(),
        )
        .unwrap();
        let store = Store::open(&dir.join("agent.db")).await.unwrap();
        let supervisor = Supervisor::new(&config, store.clone());
        Fixture {
            dir,
            store,
            supervisor,
        }
    }

    impl Fixture {
        /// Stores and submits an execute command, and waits for its result.
        async fn run(&self, id: &str, args: Value, data: Option<Value>) -> JobResult {
            self.submit(id, args, data).await;
            self.result(id).await
        }

        /// Stores and submits an execute command.
        pub(super) async fn submit(&self, id: &str, args: Value, data: Option<Value>) {
            let mut command = json!({"id": id, "gid": 1, "nid": 2, "cmd": "execute", "args": args});
            if let Some(data) = data {
                command["data"] = data;
            }
            let raw = command.to_string();
            let (command, kind) = Command::parse(raw.as_bytes()).unwrap();
            let schemas::CommandKind::Execute(args) = kind else {
                panic!("not execute")
            };
            self.store
                .receive(vec![Received { id: id.into(), raw }])
                .await
                .unwrap();
            self.supervisor.submit(Job {
                command,
                args,
                program: Program::Executable,
            });
        }

        /// Stores an internal command and returns it, to hand to the supervisor.
        pub(super) async fn internal(&self, id: &str, cmd: &str, args: Value) -> Command {
            let raw = json!({"id": id, "gid": 1, "nid": 2, "cmd": cmd, "args": args}).to_string();
            let (command, _) = Command::parse(raw.as_bytes()).unwrap();
            self.store
                .receive(vec![Received { id: id.into(), raw }])
                .await
                .unwrap();
            command
        }

        /// Waits until a job's record says `RUNNING`; returns its pid (its process group).
        pub(super) async fn running(&self, id: &str) -> u32 {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let job = self.store.unfinished().await.unwrap();
                if let Some(pid) = job
                    .iter()
                    .find(|j| j.id == id && j.state == "RUNNING")
                    .and_then(|j| j.pid)
                {
                    return pid;
                }
                assert!(std::time::Instant::now() < deadline, "{id} did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// The results in the outbox, in the order they were stored.
        pub(super) async fn results(&self) -> Vec<JobResult> {
            let rows = self
                .store
                .outbox_take(OutboxKind::Result, 1000)
                .await
                .unwrap();
            rows.iter()
                .map(|r| serde_json::from_str(&r.body).unwrap())
                .collect()
        }

        pub(super) async fn result(&self, id: &str) -> JobResult {
            for _ in 0..600 {
                let rows = self
                    .store
                    .outbox_take(OutboxKind::Result, 1000)
                    .await
                    .unwrap();
                let found = rows
                    .iter()
                    .map(|r| serde_json::from_str::<JobResult>(&r.body).unwrap())
                    .find(|r| r.id == id);
                if let Some(result) = found {
                    return result;
                }
                self.store.outbox_added().await;
            }
            panic!("no result for {id}");
        }
    }

    #[tokio::test]
    async fn echo_is_ok_with_its_output() {
        let f = fixture("echo").await;
        let r = f
            .run(
                "e",
                json!({"cmd": "echo", "args": ["hello", "world"]}),
                None,
            )
            .await;
        assert_eq!((r.state, r.exit_code), (JobState::Ok, Some(0)));
        assert_eq!(r.streams, ["hello world\n", ""]);
        assert_eq!((r.data, r.level, r.critical.as_str()), (json!(""), 0, ""));
        assert_eq!((r.gid, r.nid, r.cmd.as_str()), (1, 2, "execute"));
        assert_eq!(r.args["args"], json!(["hello", "world"]));
        assert!(r.starttime > 0);
        assert_eq!(f.store.job_state("e").await.unwrap().as_deref(), Some("OK"));
    }

    #[tokio::test]
    async fn stream_tails_keep_the_last_lines() {
        let f = fixture("tail").await;
        let r = f
            .run(
                "t",
                json!({"cmd": "sh", "args": ["-c", "seq 1 1500; echo oops >&2"]}),
                None,
            )
            .await;
        let lines: Vec<&str> = r.streams[0].lines().collect();
        assert_eq!((lines.len(), lines[0], lines[999]), (1000, "501", "1500"));
        assert_eq!(r.streams[1], "oops\n");
    }

    #[tokio::test]
    async fn a_nonzero_exit_is_an_error_with_its_code() {
        let f = fixture("exit3").await;
        let r = f
            .run("x", json!({"cmd": "sh", "args": ["-c", "exit 3"]}), None)
            .await;
        assert_eq!((r.state, r.exit_code), (JobState::Error, Some(3)));
    }

    #[tokio::test]
    async fn stdin_data_reaches_the_process() {
        let f = fixture("stdin").await;
        let r = f
            .run(
                "s",
                json!({"cmd": "cat"}),
                Some(json!("line one\nline two")),
            )
            .await;
        assert_eq!(r.streams[0], "line one\nline two");
        let r = f
            .run("j", json!({"cmd": "cat"}), Some(json!({"a": [1, 2]})))
            .await;
        assert_eq!(r.streams[0], r#"{"a":[1,2]}"#);
        // Without data, stdin is empty rather than the agent's.
        let r = f.run("n", json!({"cmd": "cat"}), None).await;
        assert_eq!((r.state, r.streams[0].as_str()), (JobState::Ok, ""));
    }

    #[tokio::test]
    async fn max_time_kills_the_whole_tree() {
        let f = fixture("timeout").await;
        let pidfile = f.dir.join("grandchild.pid");
        let script = format!("sleep 100 & echo $! > {}; sleep 100", pidfile.display());
        let r = f
            .run(
                "t",
                json!({"cmd": "sh", "args": ["-c", script], "max_time": 1}),
                None,
            )
            .await;
        assert_eq!(r.state, JobState::Timeout);
        assert_eq!(
            (r.exit_code, r.data),
            (None, json!("killed after max_time 1 s"))
        );
        assert!(r.time >= 1000 && r.time < 10_000, "{}", r.time);
        let grandchild = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
        assert!(gone(&grandchild).await, "grandchild {grandchild} survived");
    }

    #[tokio::test]
    async fn leftover_children_die_with_the_job() {
        let f = fixture("leftover").await;
        let pidfile = f.dir.join("child.pid");
        let script = format!("sleep 100 & echo $! > {}", pidfile.display());
        let r = f
            .run("l", json!({"cmd": "sh", "args": ["-c", script]}), None)
            .await;
        assert_eq!(r.state, JobState::Ok);
        let child = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
        assert!(gone(&child).await, "child {child} survived");
    }

    /// Whether a process is gone (or a zombie waiting for init to reap it).
    async fn gone(pid: &str) -> bool {
        for _ in 0..50 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z')) =>
                {
                    return true
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        false
    }

    #[tokio::test]
    async fn a_missing_executable_is_named() {
        let f = fixture("missing").await;
        let r = f.run("m", json!({"cmd": "/no/such/binary"}), None).await;
        assert_eq!(r.state, JobState::Error);
        assert_eq!(r.data, json!("executable not found: /no/such/binary"));
        let r = f.run("p", json!({"cmd": "no-such-binary-xyz"}), None).await;
        assert_eq!(
            r.data,
            json!("executable `no-such-binary-xyz` not found on PATH")
        );
    }

    #[tokio::test]
    async fn template_vars_and_workingdir_apply() {
        let f = fixture("templates").await;
        let args = json!({"cmd": "sh", "args": ["-c", "pwd; echo $0", "$agentroot:$root:$tmp"], "workingdir": "$agentroot"});
        let r = f.run("v", args, None).await;
        let dir = f.dir.display().to_string();
        let tmp = std::env::temp_dir().display().to_string();
        assert_eq!(r.streams[0], format!("{dir}\n{dir}:/opt/js:{tmp}\n"));
    }

    #[tokio::test]
    async fn env_vars_reach_the_process() {
        let f = fixture("env").await;
        let r = f
            .run(
                "v",
                json!({"cmd": "sh", "args": ["-c", "echo $GREETING"], "env": {"GREETING": "hi"}}),
                None,
            )
            .await;
        assert_eq!(r.streams[0], "hi\n");
    }

    #[tokio::test]
    async fn a_missing_workingdir_is_an_error() {
        let f = fixture("nowd").await;
        let r = f
            .run(
                "w",
                json!({"cmd": "true", "workingdir": "/no/such/dir"}),
                None,
            )
            .await;
        assert_eq!(
            (r.state, r.data),
            (
                JobState::Error,
                json!("working directory not found: /no/such/dir")
            )
        );
    }

    #[tokio::test]
    async fn a_signal_exit_has_no_code() {
        let f = fixture("signal").await;
        let r = f
            .run(
                "k",
                json!({"cmd": "sh", "args": ["-c", "kill -9 $$"]}),
                None,
            )
            .await;
        assert_eq!(
            (r.state, r.exit_code, r.data),
            (JobState::Error, None, json!("killed by signal 9"))
        );
    }

    #[tokio::test]
    async fn shutdown_kills_running_jobs_and_reports_them() {
        let f = fixture("shutdown").await;
        let raw = json!({"id": "long", "gid": 1, "nid": 2, "cmd": "execute", "args": {"cmd": "sleep", "args": ["100"]}});
        let (command, kind) = Command::parse(raw.to_string().as_bytes()).unwrap();
        let schemas::CommandKind::Execute(args) = kind else {
            panic!()
        };
        f.store
            .receive(vec![Received {
                id: "long".into(),
                raw: raw.to_string(),
            }])
            .await
            .unwrap();
        f.supervisor.submit(Job {
            command,
            args,
            program: Program::Executable,
        });
        while f.store.job_state("long").await.unwrap().as_deref() != Some("RUNNING") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f.supervisor.shutdown(Duration::from_secs(5)).await;
        let r = f.result("long").await;
        assert_eq!((r.state, r.data), (JobState::Error, json!(AGENT_STOPPED)));
    }

    #[test]
    fn stdin_is_a_string_as_is_or_json() {
        assert_eq!(stdin_bytes(None), None);
        assert_eq!(stdin_bytes(Some(&Value::Null)), None);
        assert_eq!(stdin_bytes(Some(&json!("a\"b"))), Some(b"a\"b".to_vec()));
        assert_eq!(stdin_bytes(Some(&json!([1]))), Some(b"[1]".to_vec()));
    }
}
