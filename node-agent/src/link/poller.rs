//! The poller (DESIGN §5.2, §6): says hello, then long-polls the controller for commands,
//! stores each batch durably *before* acknowledging it (on the next poll), and hands the new
//! ones to the [`Dispatcher`]. A command delivered again (lease expired, lost answer) is
//! acknowledged again but not run again.
//!
//! Any failure backs off (jittered, 0.5 s doubling to 30 s) and is followed by a new hello once
//! the controller answers again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::command::dispatch::{Dispatched, Dispatcher, Incoming};
use crate::link::backoff::Backoff;
use crate::link::client::{Controller, Hello};
use crate::store::{Received, Store, StoreError};
use schemas::JobResult;

/// How long a poll parks at the controller when there is nothing.
const WAIT: Duration = Duration::from_secs(30);
/// Most commands per poll answer.
const MAX_PER_POLL: usize = 64;

/// Why the poller stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollerExit {
    Shutdown,
    Restart,
}

pub(crate) struct Poller {
    controller: Controller,
    store: Store,
    dispatcher: Dispatcher,
    hello: Hello,
    token_source: String,
}

impl Poller {
    pub(crate) fn new(
        controller: Controller,
        store: Store,
        dispatcher: Dispatcher,
        hello: Hello,
        token_source: String,
    ) -> Poller {
        Poller {
            controller,
            store,
            dispatcher,
            hello,
            token_source,
        }
    }

    /// Polls until `shutdown` or a `restart` command. Fails only if the store is gone.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> Result<PollerExit, StoreError> {
        let mut acks: Vec<String> = Vec::new();
        let mut backoff = Backoff::new();
        let mut greeted = false;
        loop {
            let step = tokio::select! {
                _ = shutdown.cancelled() => return Ok(PollerExit::Shutdown),
                step = self.step(&mut greeted, &mut acks) => step,
            };
            match step {
                Ok(Dispatched::Restart) => return Ok(PollerExit::Restart),
                Ok(Dispatched::Done) => backoff.reset(),
                Err(Failure::Store(StoreError::Closed)) => return Err(StoreError::Closed),
                Err(failure) => {
                    self.report(&failure);
                    greeted = greeted && matches!(failure, Failure::Store(_));
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(PollerExit::Shutdown),
                        _ = backoff.wait() => {}
                    }
                }
            }
        }
    }

    /// One hello (if due) and one poll with the handling of what it brought.
    async fn step(
        &self,
        greeted: &mut bool,
        acks: &mut Vec<String>,
    ) -> Result<Dispatched, Failure> {
        if !*greeted {
            let answer = self
                .controller
                .hello(&self.hello)
                .await
                .map_err(Failure::Hello)?;
            super::client::log_hello(&answer);
            *greeted = true;
        }
        let commands = self
            .controller
            .poll(WAIT, MAX_PER_POLL, acks)
            .await
            .map_err(Failure::Poll)?;
        acks.clear();
        self.accept(commands, acks).await.map_err(Failure::Store)
    }

    /// Stores a polled batch, queues its ids for acknowledgement, and dispatches the new ones.
    async fn accept(
        &self,
        commands: Vec<String>,
        acks: &mut Vec<String>,
    ) -> Result<Dispatched, StoreError> {
        let incoming: Vec<Incoming> = commands
            .into_iter()
            .filter_map(|raw| {
                Incoming::parse(raw)
                    .inspect_err(
                        |reason| tracing::warn!(%reason, "dropped a command without a readable id"),
                    )
                    .ok()
            })
            .collect();
        if incoming.is_empty() {
            return Ok(Dispatched::Done);
        }
        // Commands answered without acting on anything (`ping`) end in the transaction that
        // stores the batch: one commit a poll.
        let received: Vec<(Received, Option<JobResult>)> = incoming
            .iter()
            .map(|i| {
                let received = Received {
                    id: i.id.clone(),
                    raw: i.raw.clone(),
                };
                (received, self.dispatcher.answer_at_once(i))
            })
            .collect();
        let answered: Vec<bool> = received.iter().map(|(_, a)| a.is_some()).collect();
        let new = self.store.receive_answered(received).await?;
        acks.extend(incoming.iter().map(|i| i.id.clone()));
        let fresh: Vec<Incoming> = incoming
            .into_iter()
            .zip(new.into_iter().zip(answered))
            .filter_map(|(incoming, (new, answered))| {
                if !new {
                    tracing::debug!(id = %incoming.id, "dropped a command already received");
                }
                (new && !answered).then_some(incoming)
            })
            .collect();
        match self.dispatcher.dispatch_batch(fresh).await {
            Err(StoreError::Closed) => Err(StoreError::Closed),
            // Stored and acknowledged already: they stay QUEUED and are dispatched on the next start.
            Err(e) => {
                tracing::error!(error = %e, "cannot dispatch stored commands");
                Ok(Dispatched::Done)
            }
            outcome => outcome,
        }
    }

    fn report(&self, failure: &Failure) {
        match failure {
            Failure::Hello(e) => e.log("hello", &self.token_source),
            Failure::Poll(e) => e.log("poll", &self.token_source),
            Failure::Store(e) => {
                tracing::error!(error = %e, "cannot store received commands; the controller will deliver them again")
            }
        }
    }
}

/// What went wrong in one step.
#[derive(Debug)]
enum Failure {
    Hello(crate::link::client::ControllerError),
    Poll(crate::link::client::ControllerError),
    Store(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OutboxKind;
    use schemas::{JobResult, JobState};
    use serde_json::json;

    #[tokio::test]
    async fn batches_are_stored_acknowledged_and_run_once() {
        let crate::testkit::Kit {
            dir,
            config,
            store,
            dispatcher,
            ..
        } = crate::testkit::kit("poller").await;
        let controller = Controller::new(&config).unwrap();
        let poller = Poller::new(
            controller,
            store.clone(),
            dispatcher,
            crate::link::client::local_hello(&[]),
            "test".into(),
        );

        let ping = json!({"id": "p", "gid": 1, "nid": 2, "cmd": "ping"});
        let batch = vec![
            ping.to_string(),
            ping.to_string(),
            json!({"no": "id"}).to_string(),
            json!({"id": "bad", "gid": 1, "nid": 2, "cmd": "fly"}).to_string(),
        ];
        let mut acks = Vec::new();
        assert_eq!(
            poller.accept(batch, &mut acks).await.unwrap(),
            Dispatched::Done
        );
        assert_eq!(acks, ["p", "p", "bad"]);
        // Delivered again (say, the ack was lost): acknowledged again, not run again.
        acks.clear();
        poller
            .accept(vec![ping.to_string()], &mut acks)
            .await
            .unwrap();
        assert_eq!(acks, ["p"]);

        let rows = store.outbox_take(OutboxKind::Result, 10).await.unwrap();
        let results: Vec<JobResult> = rows
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect();
        let states: Vec<(&str, JobState)> =
            results.iter().map(|r| (r.id.as_str(), r.state)).collect();
        assert_eq!(states, [("p", JobState::Ok), ("bad", JobState::Error)]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
