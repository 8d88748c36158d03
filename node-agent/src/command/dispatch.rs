//! Where a stored command goes: internal commands are answered here (`ping`, `restart`) or by a
//! task of their own (host facts of [`crate::command::info`], `get_msgs`/`del_msgs` from the log store,
//! process stats from the sampler, `put_file`/`get_file` by [`crate::command::files`]); process commands — and `kill`, `killall`, which the
//! supervisor answers once the jobs have ended — go to the [`Supervisor`],
//! and a command the agent cannot parse ends `ERROR` with the reason. Every command that
//! reaches [`Dispatcher::dispatch`] gets exactly one result; none is dropped.
//!
//! Used by the poller for new commands and by start-up recovery for commands stored but never
//! started.

use std::future::Future;

use futures::future::BoxFuture;
use schemas::{Command, CommandKind, JobResult, JobState};
use serde_json::Value;

use crate::command::files::Files;
use crate::command::info::{self, Fact};
use crate::logs::logger::Logs;
use crate::store::{Store, StoreError};
use crate::supervisor::launch::Program;
use crate::supervisor::{Job, Supervisor};

/// A command as received, before it is stored: its id, its raw JSON, and whether it parsed.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) id: String,
    pub(crate) raw: String,
    pub(crate) parsed: Result<(Command, CommandKind), String>,
}

impl Incoming {
    /// Parses a raw command. A command without a readable id cannot be answered or stored:
    /// that is the `Err`, with the reason.
    pub(crate) fn parse(raw: String) -> Result<Incoming, String> {
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
pub(crate) enum Dispatched {
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
    /// Answered by a task of its own (commands that read the disk or wait: host facts, the log
    /// store), which stores the result when it is ready.
    Deferred {
        answer: BoxFuture<'static, JobResult>,
        /// The command's `data` (a `put_file` chunk) is dropped from the ledger in the
        /// transaction that stores the result: not before, or an agent killed in between would
        /// dispatch the command again at start-up without its chunk.
        forget_data: bool,
    },
}

#[derive(Clone)]
pub(crate) struct Dispatcher {
    store: Store,
    supervisor: Supervisor,
    logs: Logs,
    files: Files,
    gid: u64,
    nid: u64,
}

impl Dispatcher {
    pub(crate) fn new(
        store: Store,
        supervisor: Supervisor,
        logs: Logs,
        files: Files,
        gid: u64,
        nid: u64,
    ) -> Dispatcher {
        Dispatcher {
            store,
            supervisor,
            logs,
            files,
            gid,
            nid,
        }
    }

    /// Answers or starts a stored command.
    pub(crate) async fn dispatch(&self, incoming: Incoming) -> Result<Dispatched, StoreError> {
        self.dispatch_batch(vec![incoming]).await
    }

    /// Answers or starts a batch of stored commands, in order. The answers of internal commands
    /// are stored in one transaction (one per command cost ~3× the CPU under load).
    pub(crate) async fn dispatch_batch(
        &self,
        batch: Vec<Incoming>,
    ) -> Result<Dispatched, StoreError> {
        let mut answers = Vec::new();
        let mut outcome = Dispatched::Done;
        for incoming in batch {
            match self.route(incoming) {
                Routed::Answered(result, dispatched) => {
                    answers.push(*result);
                    if dispatched == Dispatched::Restart {
                        outcome = Dispatched::Restart;
                    }
                }
                Routed::Submitted => {}
                Routed::Deferred {
                    answer,
                    forget_data,
                } => {
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        let result = answer.await;
                        let stored = if forget_data {
                            store.finish_forgetting_data(&result).await
                        } else {
                            store.finish(&result).await
                        };
                        if let Err(e) = stored {
                            tracing::error!(id = %result.id, error = %e, "cannot store a command's answer");
                        }
                    });
                }
            }
        }
        if !answers.is_empty() {
            self.store.finish_many(answers).await?;
        }
        Ok(outcome)
    }

    /// The answer of a command answered without acting on anything (`ping`, a command that
    /// cannot be parsed), which the poller stores with the command in one transaction
    /// ([`Store::receive_answered`]); `None` for any other, which goes to [`Dispatcher::dispatch`].
    pub(crate) fn answer_at_once(&self, incoming: &Incoming) -> Option<JobResult> {
        match &incoming.parsed {
            Err(reason) => Some(self.error_for_raw(&incoming.id, &incoming.raw, reason.clone())),
            Ok((command, CommandKind::Ping)) => Some(self.pong(command)),
            Ok(_) => None,
        }
    }

    fn pong(&self, command: &Command) -> JobResult {
        let mut result = self.result(command, JobState::Ok);
        result.data = Value::String("pong".into());
        result
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
        let (args, program) = match Program::of(kind) {
            Ok(process) => process,
            Err(internal) => return self.internal(command, internal),
        };
        self.supervisor.submit(Job {
            command,
            args,
            program,
            resume: None,
        });
        Routed::Submitted
    }

    /// Answers an internal command (DESIGN §6.2), here or from a task of its own; `kill` and
    /// `killall` go to the supervisor, which answers once the jobs have ended.
    fn internal(&self, mut command: Command, kind: CommandKind) -> Routed {
        match kind {
            CommandKind::Execute(_) | CommandKind::ExecutePy(_) | CommandKind::ExecuteLua(_) => {
                // `route` hands these to the supervisor; never dropped silently all the same.
                let reason = format!("`{}` is not an internal command", command.cmd);
                let result = JobResult::error(
                    &command.id,
                    self.gid,
                    self.nid,
                    &command.cmd,
                    command.args.clone(),
                    reason,
                );
                Routed::Answered(Box::new(result), Dispatched::Done)
            }
            CommandKind::Ping => Routed::Answered(Box::new(self.pong(&command)), Dispatched::Done),
            CommandKind::Kill(target) => {
                self.supervisor.kill(command, &target.id);
                Routed::Submitted
            }
            CommandKind::Killall => {
                self.supervisor.killall(command);
                Routed::Submitted
            }
            CommandKind::GetProcessStats(target) => {
                let sampler = self.supervisor.sampler().clone();
                self.defer(&command, async move { sampler.job_stats(&target.id).await })
            }
            CommandKind::GetProcessesStats(filter) => {
                let sampler = self.supervisor.sampler().clone();
                self.defer(&command, async move {
                    let (domain, name) = (filter.domain.as_deref(), filter.name.as_deref());
                    Ok(sampler.group_stats(domain, name).await)
                })
            }
            CommandKind::GetMsgs(filter) => {
                let logs = self.logs.clone();
                self.defer(&command, async move { logs.get_msgs(filter).await })
            }
            CommandKind::DelMsgs(filter) => {
                let logs = self.logs.clone();
                self.defer(&command, async move { logs.del_msgs(filter).await })
            }
            CommandKind::Restart => {
                let mut result = self.result(&command, JobState::Ok);
                result.data = Value::String("restarting".into());
                Routed::Answered(Box::new(result), Dispatched::Restart)
            }
            CommandKind::PutFile(args) => {
                // The chunk is needed only by the writer: moved, not copied (up to ~6 MB).
                // Written or refused, the chunk's copy in the ledger is then dead weight: dropped
                // with the result stored (`forget_data`).
                let (files, chunk) = (self.files.clone(), command.data.take());
                let mut routed = self.defer(&command, async move { files.put(args, chunk).await });
                if let Routed::Deferred { forget_data, .. } = &mut routed {
                    *forget_data = true;
                }
                routed
            }
            CommandKind::GetFile(args) => {
                let files = self.files.clone();
                self.defer(&command, async move { files.get(args).await })
            }
            CommandKind::GetOsInfo => self.defer(&command, info::read(Fact::Os)),
            CommandKind::GetCpuInfo => self.defer(&command, info::read(Fact::Cpu)),
            CommandKind::GetMemInfo => self.defer(&command, info::read(Fact::Mem)),
            CommandKind::GetDiskInfo => self.defer(&command, info::read(Fact::Disk)),
            CommandKind::GetNicInfo => self.defer(&command, info::read(Fact::Nic)),
        }
    }

    /// Answers a command from a task: `Ok` is the JSON `data` of an `OK` result, `Err` the
    /// reason of an `ERROR`.
    fn defer<F>(&self, command: &Command, answer: F) -> Routed
    where
        F: Future<Output = Result<Value, String>> + Send + 'static,
    {
        let mut result = self.result(command, JobState::Ok);
        Routed::Deferred {
            answer: Box::pin(async move {
                match answer.await {
                    Ok(data) => result.data = data,
                    Err(reason) => {
                        result.state = JobState::Error;
                        result.data = Value::String(reason);
                    }
                }
                result
            }),
            forget_data: false,
        }
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
    pub(crate) fn error_for_raw(
        &self,
        id: &str,
        raw: &str,
        reason: impl Into<String>,
    ) -> JobResult {
        let value: Value = serde_json::from_str(raw).unwrap_or_default();
        let cmd = value.get("cmd").and_then(Value::as_str).unwrap_or_default();
        let args = value
            .get("args")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        JobResult::error(id, self.gid, self.nid, cmd, args, reason)
    }
}

#[cfg(test)]
mod tests;
