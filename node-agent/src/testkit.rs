//! The test kit shared by the agent's unit tests: a temporary dir removed when dropped, and an
//! agent 1:2 in one (its config, store, supervisor and dispatcher), with helpers to submit jobs
//! and wait for their results.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::command::dispatch::Dispatcher;
use crate::config::{Config, FileConfig, Flags};
use crate::logs::Logs;
use crate::store::Store;
use crate::supervisor::Supervisor;

/// A new, empty temporary dir `jsagent-<name>-<pid>`, removed when dropped.
pub(crate) struct TestDir(PathBuf);

impl TestDir {
    pub(crate) fn new(name: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("jsagent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TestDir(dir)
    }
}

impl Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An agent 1:2 with its data in a new temporary dir named after `name`, installed in `/opt/js`.
pub(crate) struct Kit {
    pub(crate) dir: TestDir,
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) dispatcher: Dispatcher,
    // Read only by the tests that run real processes, which are unix-only.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) supervisor: Supervisor,
}

pub(crate) async fn kit(name: &str) -> Kit {
    kit_with(name, None).await
}

/// A kit whose supervisor runs at most `max_jobs` jobs at once (the config's default if `None`).
pub(crate) async fn kit_with(name: &str, max_jobs: Option<usize>) -> Kit {
    let dir = TestDir::new(name);
    let flags = Flags {
        controller: Some("http://127.0.0.1:1".into()),
        gid: Some(1),
        nid: Some(2),
        data_dir: Some(dir.to_path_buf()),
        max_jobs,
        ..Default::default()
    };
    let config = Config::resolve(
        flags,
        FileConfig::default(),
        Some("t".into()),
        "/opt/js".into(),
    )
    .expect("test config");
    let store = Store::open(&dir.join("agent.db")).await.expect("store");
    let logs = Logs::start(&config, store.clone(), None)
        .await
        .expect("logs");
    let supervisor = Supervisor::new(&config, store.clone(), logs.clone());
    let files = crate::command::files::Files::new(&config);
    let dispatcher = Dispatcher::new(store.clone(), supervisor.clone(), logs, files, 1, 2);
    Kit {
        dir,
        config,
        store,
        dispatcher,
        supervisor,
    }
}

/// Jobs through the supervisor, for the tests that run real processes (unix-only).
#[cfg(unix)]
mod jobs {
    use std::time::Duration;

    use schemas::{Command, JobResult};
    use serde_json::{json, Value};

    use super::Kit;
    use crate::store::{OutboxKind, Received};
    use crate::supervisor::launch::Program;
    use crate::supervisor::Job;

    impl Kit {
        /// Stores and submits an execute command, and waits for its result.
        pub(crate) async fn run(&self, id: &str, args: Value, data: Option<Value>) -> JobResult {
            self.submit(id, args, data).await;
            self.result(id).await
        }

        /// Stores and submits an execute command.
        pub(crate) async fn submit(&self, id: &str, args: Value, data: Option<Value>) {
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
                resume: None,
            });
        }

        /// Stores an internal command and returns it, to hand to the supervisor.
        pub(crate) async fn internal(&self, id: &str, cmd: &str, args: Value) -> Command {
            let raw = json!({"id": id, "gid": 1, "nid": 2, "cmd": cmd, "args": args}).to_string();
            let (command, _) = Command::parse(raw.as_bytes()).unwrap();
            self.store
                .receive(vec![Received { id: id.into(), raw }])
                .await
                .unwrap();
            command
        }

        /// Waits until a job's record says `RUNNING`; returns its pid (its process group).
        pub(crate) async fn running(&self, id: &str) -> u32 {
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
        pub(crate) async fn results(&self) -> Vec<JobResult> {
            let rows = self
                .store
                .outbox_take(OutboxKind::Result, 1000)
                .await
                .unwrap();
            rows.iter()
                .map(|r| serde_json::from_str(&r.body).unwrap())
                .collect()
        }

        pub(crate) async fn result(&self, id: &str) -> JobResult {
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
}
