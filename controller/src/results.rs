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
    Ok(record_all(state, agent, std::slice::from_ref(result)).await?[0])
}

/// Records an agent's results: each (job, agent) once, concurrently (the multiplexed connection
/// pipelines them), then settles their deliveries and publishes the changes in one go each.
pub async fn record_all(
    state: &Shared,
    agent: &str,
    results: &[JobResult],
) -> redis::RedisResult<Vec<Outcome>> {
    let recorded =
        futures::future::try_join_all(results.iter().map(|r| record_one(state, agent, r))).await?;
    // Settles the deliveries even when the agent's ack was lost with a previous answer.
    let settled: Vec<String> = results
        .iter()
        .zip(&recorded)
        .filter(|(_, (o, _))| matches!(o, Outcome::Recorded | Outcome::Duplicate))
        .map(|(r, _)| r.id.clone())
        .collect();
    if !settled.is_empty() {
        poll::take(state, agent, 0, &settled).await?;
    }
    let mut pipe = redis::pipe();
    let mut any = false;
    for (r, (outcome, job_state)) in results.iter().zip(&recorded) {
        if *outcome == Outcome::Recorded {
            let event = json!({"id": r.id, "gid": r.gid, "nid": r.nid, "state": job_state});
            pipe.publish(keys::EVENTS, event.to_string()).ignore();
            state.metrics.finished(r.state.as_str());
            any = true;
        }
    }
    if any {
        pipe.exec_async(&mut state.conn()).await?;
    }
    Ok(recorded.into_iter().map(|(o, _)| o).collect())
}

/// Runs `record_result.lua` for one result; returns what became of it and the job's state.
async fn record_one(
    state: &Shared,
    agent: &str,
    result: &JobResult,
) -> redis::RedisResult<(Outcome, String)> {
    let mut conn = state.conn();
    let body = serde_json::to_string(result).expect("a result serializes");
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
        .arg(result.run)
        .arg(if result.is_final { "1" } else { "0" })
        .invoke_async(&mut conn)
        .await?;
    let outcome = match status.as_str() {
        "recorded" => Outcome::Recorded,
        "duplicate" => Outcome::Duplicate,
        "not_a_target" => Outcome::NotATarget,
        _ => Outcome::UnknownJob,
    };
    Ok((outcome, job_state))
}
