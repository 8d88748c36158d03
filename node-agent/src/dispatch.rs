//! Where a stored command goes: internal commands are answered here (`ping`, `restart`, and an
//! `ERROR` for those this version does not implement yet), process commands — and `kill`,
//! `killall`, which the supervisor answers once the jobs have ended — go to the [`Supervisor`],
//! and a command the agent cannot parse ends `ERROR` with the reason. Every command that
//! reaches [`Dispatcher::dispatch`] gets exactly one result; none is dropped.
//!
//! Used by the poller for new commands and by start-up recovery for commands stored but never
//! started.

use schemas::{Command, CommandKind, ExecuteArgs, JobResult, JobState};
use serde_json::Value;

use crate::launch::Program;
use crate::store::{Store, StoreError};
use crate::supervisor::{Job, Supervisor};

/// A command as received, before it is stored: its id, its raw JSON, and whether it parsed.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub id: String,
    pub raw: String,
    pub parsed: Result<(Command, CommandKind), String>,
}

impl Incoming {
    /// Parses a raw command. A command without a readable id cannot be answered or stored:
    /// that is the `Err`, with the reason.
    pub fn parse(raw: String) -> Result<Incoming, String> {
        match Command::parse(raw.as_bytes()) {
            Ok((command, kind)) => Ok(Incoming {
                id: command.id.clone(),
                raw,
                parsed: Ok((command, kind)),
            }),
            Err((Some(id), e)) => Ok(Incoming {
                id,
                raw,
                parsed: Err(e.to_string()),
            }),
            Err((None, e)) => Err(e.to_string()),
        }
    }
}

/// What the poller must do after a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    Done,
    /// `restart` was answered: flush the outbox and exit for the service manager to restart us.
    Restart,
}

/// What [`Dispatcher::route`] did with a command.
enum Routed {
    /// Answered here: the result to store, and what the poller must do next.
    Answered(Box<JobResult>, Dispatched),
    /// Handed to the supervisor, which stores its result when it ends.
    Submitted,
}

#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    supervisor: Supervisor,
    gid: u64,
    nid: u64,
}

impl Dispatcher {
    pub fn new(store: Store, supervisor: Supervisor, gid: u64, nid: u64) -> Dispatcher {
        Dispatcher {
            store,
            supervisor,
            gid,
            nid,
        }
    }

    /// Answers or starts a stored command.
    pub async fn dispatch(&self, incoming: Incoming) -> Result<Dispatched, StoreError> {
        self.dispatch_batch(vec![incoming]).await
    }

    /// Answers or starts a batch of stored commands, in order. The answers of internal commands
    /// are stored in one transaction (one per command cost ~3× the CPU under load).
    pub async fn dispatch_batch(&self, batch: Vec<Incoming>) -> Result<Dispatched, StoreError> {
        let mut answers = Vec::new();
        let mut outcome = Dispatched::Done;
        for incoming in batch {
            if let Routed::Answered(result, dispatched) = self.route(incoming) {
                answers.push(*result);
                if dispatched == Dispatched::Restart {
                    outcome = Dispatched::Restart;
                }
            }
        }
        if !answers.is_empty() {
            self.store.finish_many(answers).await?;
        }
        Ok(outcome)
    }

    /// Answers an internal command, or hands a process command (or a kill) to the supervisor.
    fn route(&self, incoming: Incoming) -> Routed {
        let (command, kind) = match incoming.parsed {
            Ok(parsed) => parsed,
            Err(reason) => {
                let result = self.error_for_raw(&incoming.id, &incoming.raw, reason);
                return Routed::Answered(Box::new(result), Dispatched::Done);
            }
        };
        let (args, program) = match kind {
            CommandKind::Execute(args) => (args, Program::Executable),
            CommandKind::ExecutePy(args) => (args, Program::Python),
            CommandKind::ExecuteLua(args) => (args, Program::Lua),
            CommandKind::Ping => {
                let mut result = self.result(&command, JobState::Ok);
                result.data = Value::String("pong".into());
                return Routed::Answered(Box::new(result), Dispatched::Done);
            }
            CommandKind::Kill(target) => {
                self.supervisor.kill(command, &target.id);
                return Routed::Submitted;
            }
            CommandKind::Killall => {
                self.supervisor.killall(command);
                return Routed::Submitted;
            }
            CommandKind::Restart => {
                let mut result = self.result(&command, JobState::Ok);
                result.data = Value::String("restarting".into());
                return Routed::Answered(Box::new(result), Dispatched::Restart);
            }
            _ => {
                let reason = format!(
                    "command `{}` is not supported by this agent version yet",
                    command.cmd
                );
                return Routed::Answered(Box::new(self.fail(&command, reason)), Dispatched::Done);
            }
        };
        if let Some(reason) = not_supported_yet(&args) {
            return Routed::Answered(
                Box::new(self.fail(&command, reason.to_owned())),
                Dispatched::Done,
            );
        }
        self.supervisor.submit(Job {
            command,
            args,
            program,
        });
        Routed::Submitted
    }

    fn fail(&self, command: &Command, reason: String) -> JobResult {
        let mut result = self.result(command, JobState::Error);
        result.data = Value::String(reason);
        result
    }

    fn result(&self, command: &Command, state: JobState) -> JobResult {
        JobResult::new(
            &command.id,
            self.gid,
            self.nid,
            &command.cmd,
            command.args.clone(),
            state,
        )
    }

    /// An `ERROR` result for a stored command known only by its raw JSON, echoing what of its
    /// `cmd` and `args` can be read.
    pub fn error_for_raw(&self, id: &str, raw: &str, reason: impl Into<String>) -> JobResult {
        let value: Value = serde_json::from_str(raw).unwrap_or_default();
        let cmd = value.get("cmd").and_then(Value::as_str).unwrap_or_default();
        let args = value
            .get("args")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        JobResult::error(id, self.gid, self.nid, cmd, args, reason)
    }
}

/// Process features of later versions. Refused clearly rather than run differently.
fn not_supported_yet(args: &ExecuteArgs) -> Option<&'static str> {
    if args.max_time == -1 {
        Some("long-running jobs (`max_time` -1) are not supported by this agent version yet")
    } else if args.recurring_period > 0 {
        Some("recurring jobs (`recurring_period`) are not supported by this agent version yet")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OutboxKind, Received};
    use serde_json::json;

    async fn dispatcher(name: &str) -> (Dispatcher, Store, std::path::PathBuf) {
        let kit = crate::testkit::kit(&format!("dispatch-{name}")).await;
        (kit.dispatcher, kit.store, kit.dir)
    }

    async fn answer(d: &Dispatcher, store: &Store, raw: Value) -> (Dispatched, JobResult) {
        let incoming = Incoming::parse(raw.to_string()).unwrap();
        store
            .receive(vec![Received {
                id: incoming.id.clone(),
                raw: incoming.raw.clone(),
            }])
            .await
            .unwrap();
        let dispatched = d.dispatch(incoming).await.unwrap();
        let rows = store.outbox_take(OutboxKind::Result, 100).await.unwrap();
        store
            .outbox_delete(rows.iter().map(|r| r.seq).collect())
            .await
            .unwrap();
        (
            dispatched,
            serde_json::from_str(&rows.last().unwrap().body).unwrap(),
        )
    }

    #[tokio::test]
    async fn ping_is_answered_pong() {
        let (d, store, dir) = dispatcher("ping").await;
        let (done, r) = answer(
            &d,
            &store,
            json!({"id": "p", "gid": 1, "role": "web", "cmd": "ping"}),
        )
        .await;
        assert_eq!(done, Dispatched::Done);
        assert_eq!(
            (r.state, r.data, r.exit_code),
            (JobState::Ok, json!("pong"), None)
        );
        assert_eq!((r.gid, r.nid), (1, 2));
        assert_eq!(store.job_state("p").await.unwrap().as_deref(), Some("OK"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn restart_is_answered_then_requested() {
        let (d, store, dir) = dispatcher("restart").await;
        let (done, r) = answer(
            &d,
            &store,
            json!({"id": "r", "gid": 1, "nid": 2, "cmd": "restart"}),
        )
        .await;
        assert_eq!((done, r.state), (Dispatched::Restart, JobState::Ok));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn unimplemented_commands_are_errors_not_silence() {
        let (d, store, dir) = dispatcher("unsupported").await;
        let (_, r) = answer(
            &d,
            &store,
            json!({"id": "s", "gid": 1, "nid": 2, "cmd": "get_process_stats", "args": {"id": "x"}}),
        )
        .await;
        assert_eq!(r.state, JobState::Error);
        assert_eq!(
            r.data,
            json!("command `get_process_stats` is not supported by this agent version yet")
        );
        assert_eq!(r.args, json!({"id": "x"}));
        let recurring = json!({"id": "rc", "gid": 1, "nid": 2, "cmd": "execute", "args": {"cmd": "true", "recurring_period": 5}});
        let (_, r) = answer(&d, &store, recurring).await;
        assert!(
            r.data.as_str().unwrap().contains("recurring_period"),
            "{}",
            r.data
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn kill_and_killall_are_answered_by_the_supervisor() {
        let (d, store, dir) = dispatcher("kill").await;
        for raw in [
            json!({"id": "k", "gid": 1, "nid": 2, "cmd": "kill", "args": {"id": "nope"}}),
            json!({"id": "ka", "gid": 1, "nid": 2, "cmd": "killall"}),
        ] {
            let incoming = Incoming::parse(raw.to_string()).unwrap();
            let received = Received {
                id: incoming.id.clone(),
                raw: incoming.raw.clone(),
            };
            store.receive(vec![received]).await.unwrap();
            assert_eq!(d.dispatch(incoming).await.unwrap(), Dispatched::Done);
        }
        let mut results: Vec<JobResult> = Vec::new();
        while results.len() < 2 {
            store.outbox_added().await;
            let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
            results = rows
                .iter()
                .map(|r| serde_json::from_str(&r.body).unwrap())
                .collect();
        }
        results.sort_by(|a, b| a.id.cmp(&b.id));
        let got: Vec<(&str, JobState, &Value)> = results
            .iter()
            .map(|r| (r.id.as_str(), r.state, &r.data))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "k",
                    JobState::Error,
                    &json!("no running or queued job `nope` on this agent")
                ),
                ("ka", JobState::Ok, &json!({"killed": []})),
            ]
        );
        assert_eq!(
            store.job_state("k").await.unwrap().as_deref(),
            Some("ERROR")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn unparsable_commands_with_an_id_get_an_error() {
        let (d, store, dir) = dispatcher("invalid").await;
        let (_, r) = answer(
            &d,
            &store,
            json!({"id": "b", "gid": 1, "nid": 2, "cmd": "fly"}),
        )
        .await;
        assert_eq!(
            (r.state, r.data, r.cmd.as_str()),
            (JobState::Error, json!("unknown command `fly`"), "fly")
        );
        assert!(Incoming::parse("{}".into()).is_err());
        assert!(Incoming::parse("not json".into()).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
