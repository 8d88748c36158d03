//! Result intake (DESIGN §5.3): each (job, agent) result is recorded once, appended to
//! `cmds_queue_<id>`, the job's state updated, the delivery settled and the change published.

use serde::Serialize;
use serde_json::json;

use schemas::JobResult;

use crate::{keys, poll, state::Shared};

/// What became of one posted result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    Duplicate,
    UnknownJob,
    NotATarget,
}

/// The answer to a posted batch (docs/protocol.md).
#[derive(Debug, Default, Serialize)]
pub struct BatchAnswer {
    pub recorded: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
pub struct Rejected {
    pub id: String,
    pub error: &'static str,
    pub message: String,
}

impl BatchAnswer {
    pub fn add(&mut self, id: &str, outcome: Outcome) {
        match outcome {
            Outcome::Recorded => self.recorded += 1,
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::UnknownJob => self.rejected.push(Rejected {
                id: id.to_owned(),
                error: "unknown_job",
                message: format!("no job `{id}` (never routed, or its record expired)"),
            }),
            Outcome::NotATarget => self.rejected.push(Rejected {
                id: id.to_owned(),
                error: "unknown_job",
                message: format!("job `{id}` was not sent to this agent"),
            }),
        }
    }

    pub fn reject(&mut self, id: &str, message: String) {
        self.rejected.push(Rejected {
            id: id.to_owned(),
            error: "bad_request",
            message,
        });
    }
}

/// Records one agent's result of a job.
pub async fn record(
    state: &Shared,
    agent: &str,
    result: &JobResult,
) -> redis::RedisResult<Outcome> {
    let mut conn = state.conn();
    let body = serde_json::to_string(result).unwrap_or_default();
    let (status, job_state): (String, String) = state
        .scripts
        .record_result
        .key(keys::job(&result.id))
        .key(keys::results(&result.id))
        .arg(agent)
        .arg(&body)
        .arg(result.state.as_str())
        .arg(state.config.result_ttl.as_secs())
        .arg(state.config.max_results)
        .invoke_async(&mut conn)
        .await?;
    let outcome = match status.as_str() {
        "recorded" => Outcome::Recorded,
        "duplicate" => Outcome::Duplicate,
        "not_a_target" => Outcome::NotATarget,
        _ => Outcome::UnknownJob,
    };
    if matches!(outcome, Outcome::Recorded | Outcome::Duplicate) {
        // Settles the delivery even when the agent's ack was lost with a previous answer.
        poll::take(state, agent, 0, std::slice::from_ref(&result.id)).await?;
    }
    if outcome == Outcome::Recorded {
        let event =
            json!({"id": result.id, "gid": result.gid, "nid": result.nid, "state": job_state});
        redis::cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg(event.to_string())
            .query_async::<()>(&mut conn)
            .await?;
        state.metrics.finished(result.state.as_str());
    }
    Ok(outcome)
}
