//! `kill` and `killall` (DESIGN §6, §6.2): a kill claims jobs in the [`Registry`] and wakes
//! their owning tasks, which end them `KILLED` — a running job's process tree gets SIGTERM, then
//! SIGKILL after [`KILL_GRACE`]; a waiting job never starts — and store their results. The
//! kill command is answered after that, from its own task, so the poller never waits for a
//! grace period:
//!
//! - `kill`: `OK` `{"killed": "<id>", "was": "running"|"queued"}`; `ERROR` "no running or queued
//!   job `<id>` on this agent" when it is unknown or has ended; `ERROR` too when another kill
//!   has claimed it already, or when it ended on its own before this kill reached it.
//! - `killall`: `OK` `{"killed": [<ids>], "remembered": [<ids>]}`, in the order the jobs came.
//!   `killed`: the jobs whose process (or wait for a slot) was ended. `remembered`: the
//!   long-running and recurring jobs among them, and those waiting for their next run, which
//!   stay registered and come back (DESIGN §6). A `kill` by id forgets a remembered job.
//!
//! [`KILL_GRACE`]: super::KILL_GRACE
//! [`Registry`]: crate::supervisor::registry::Registry

use std::future::Future;

use schemas::{Command, JobState};
use serde_json::{json, Value};
use tracing::Instrument;

use super::Supervisor;
use crate::supervisor::registry::{Killer, Killing};

impl Supervisor {
    /// Kills job `target`, running or waiting, and answers `command` once it has ended.
    pub(crate) fn kill(&self, command: Command, target: &str) {
        let killing = self.inner.registry.kill(target, &killer(&command));
        self.answer_when(command, async move {
            let killing = killing.map_err(|refused| refused.to_string())?;
            let (id, was) = (killing.id.clone(), killing.was);
            match ended(killing).await {
                Some(JobState::Killed) => Ok(json!({"killed": id, "was": was.as_str()})),
                Some(state) => Err(format!(
                    "job `{id}` ended {} before it could be killed",
                    state.as_str()
                )),
                None => Err(format!("job `{id}` went away before it could be killed")),
            }
        });
    }

    /// Kills every running and waiting job, and answers `command` once they have ended.
    pub(crate) fn killall(&self, command: Command) {
        let killings = self.inner.registry.kill_all(&killer(&command));
        self.answer_when(command, async move {
            let (mut killed, mut remembered) = (Vec::new(), Vec::new());
            for killing in killings {
                let id = killing.id.clone();
                // A remembered job's owner answers RUNNING (its run was killed; it comes back)
                // or QUEUED (it was waiting for its next run, and still is).
                match ended(killing).await {
                    Some(JobState::Killed) => killed.push(id),
                    Some(JobState::Running) => {
                        killed.push(id.clone());
                        remembered.push(id);
                    }
                    Some(JobState::Queued) => remembered.push(id),
                    _ => {}
                }
            }
            Ok(json!({ "killed": killed, "remembered": remembered }))
        });
    }

    /// Stores `command`'s answer, `OK` with the JSON or `ERROR` with the reason, once `answer`
    /// resolves.
    fn answer_when(
        &self,
        command: Command,
        answer: impl Future<Output = Result<Value, String>> + Send + 'static,
    ) {
        let this = self.clone();
        let span = tracing::info_span!("kill", id = %command.id, cmd = %command.cmd);
        let task = async move {
            let result = match answer.await {
                Ok(data) => {
                    let mut result = this.result_for(&command, JobState::Ok);
                    result.data = data;
                    result
                }
                Err(reason) => {
                    let mut result = this.result_for(&command, JobState::Error);
                    result.data = Value::String(reason);
                    result
                }
            };
            tracing::info!(state = result.state.as_str(), data = %result.data, "kill answered");
            if let Err(e) = this.inner.store.finish(&result).await {
                tracing::error!(error = %e, "cannot store a kill's answer");
            }
        };
        self.inner.tasks.spawn(task.instrument(span));
    }
}

fn killer(command: &Command) -> Killer {
    Killer {
        cmd: command.cmd.clone(),
        id: command.id.clone(),
    }
}

/// The final state of a claimed job, once its result is stored; `None` if its owner went away
/// without one (its task was dropped as the agent stopped).
async fn ended(killing: Killing) -> Option<JobState> {
    killing.ended.await.ok()
}

#[cfg(test)]
#[cfg(unix)]
mod tests;
