//! The controller's answers to an agent's requests (docs/protocol.md §hello, §result, §logs,
//! §stats), and the job events it publishes on `jsacc:events`. The controller serializes these
//! types and the agent reads them back, so the two sides cannot drift apart; every field an
//! older peer may omit has a default.

use serde::{Deserialize, Serialize};

use crate::JobState;

/// The answer to `POST …/hello`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HelloAnswer {
    /// Seconds a delivered command may stay unacknowledged.
    pub lease: u64,
    /// The controller's clock, ms since the epoch.
    pub server_time: u64,
    /// The roles the agent's token grants (absent from older controllers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// What the controller wants the operator to know, e.g. roles claimed but not granted.
    pub warnings: Vec<String>,
}

/// The answer to a posted result or batch of results: every item is settled by it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchAnswer {
    pub recorded: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

/// One item the controller refused; posting it again cannot succeed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rejected {
    /// The job id of the refused result (empty when the item had none).
    pub id: String,
    /// A code: `bad_request`, `mismatched_agent`, `unknown_job`, `not_recurring`, …
    pub error: String,
    pub message: String,
}

impl BatchAnswer {
    pub fn reject(&mut self, id: &str, error: &str, message: impl Into<String>) {
        self.rejected.push(Rejected {
            id: id.to_owned(),
            error: error.to_owned(),
            message: message.into(),
        });
    }
}

/// The answer to a posted array of log messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogsAnswer {
    /// Messages appended to their stream now.
    pub stored: usize,
    /// Messages appended by an earlier post.
    pub duplicates: usize,
    /// Items that are not log messages (dropped), with the first reason.
    pub rejected: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Messages whose `data` was over `--log-max-message` and was cut (they are appended).
    #[serde(skip_serializing_if = "is_zero")]
    pub cut: usize,
}

/// The answer to a posted array of stats batches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsAnswer {
    pub recorded: usize,
    /// Batches appended by an earlier post.
    pub duplicates: usize,
    /// Metric names not stored in `:latest`: it already holds `--stats-max-metrics` others
    /// (left out of the answer when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_metrics: usize,
    pub rejected: Vec<RejectedBatch>,
}

/// A stats batch the controller refused, by its index in the posted array.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RejectedBatch {
    pub index: usize,
    pub error: String,
    pub message: String,
}

/// A change of a job's state on one agent, published on `jsacc:events` for clients
/// that wait on jobs without polling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub id: String,
    pub gid: u64,
    pub nid: u64,
    pub state: JobState,
}

impl JobEvent {
    /// The event's JSON text, as published.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_back_what_older_and_newer_peers_send() {
        let old: HelloAnswer = serde_json::from_str(r#"{"lease": 30, "server_time": 1}"#).unwrap();
        assert_eq!((old.lease, old.roles), (30, None));
        let newer: BatchAnswer =
            serde_json::from_str(r#"{"recorded": 1, "later": {"x": 1}}"#).unwrap();
        assert_eq!((newer.recorded, newer.duplicates), (1, 0));
        let logs = serde_json::to_value(LogsAnswer::default()).unwrap();
        assert_eq!(
            logs,
            serde_json::json!({"stored": 0, "duplicates": 0, "rejected": 0})
        );
    }

    #[test]
    fn a_job_event_is_the_json_clients_read() {
        let e = JobEvent {
            id: "j".into(),
            gid: 1,
            nid: 2,
            state: JobState::Running,
        };
        let back: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"id": "j", "gid": 1, "nid": 2, "state": "RUNNING"})
        );
    }
}
