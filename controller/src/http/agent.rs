//! The agent endpoints under `/v1/agents/{gid}/{nid}` (docs/protocol.md): each checks what was
//! posted with the pure parsers of the domain modules, hands it to them, and answers with the
//! `schemas` answer types the agent reads back.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use schemas::{BatchAnswer, HelloAnswer, LogsAnswer, OutputAnswer, StatsAnswer};

use super::{Api, AppError, Caller};
use crate::intake::Invalid;
use crate::poll::PollRequest;
use crate::results::{Outcome, ResultPost};
use crate::{agents, config_jobs, logs, output, poll, results, stats};

/// `POST …/hello`: records the agent's facts; answers its lease and the roles its token grants.
pub async fn hello(
    State(api): State<Api>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HelloAnswer>, AppError> {
    let hello = agents::parse_hello(&body?)?;
    let mut granted = agents::hello(&api.state, &caller.agent, &hello).await?;
    // The config-file jobs it started: their records exist before their first result.
    let (started, declared) = (hello.started, &hello.config_jobs);
    let warnings = config_jobs::declare(&api.state, &caller.agent, started, declared).await?;
    granted.warnings.extend(warnings);
    tracing::info!(
        agent = caller.agent,
        hostname = hello.hostname,
        version = hello.version,
        roles = granted.roles.join(","),
        "agent said hello"
    );
    for warning in &granted.warnings {
        tracing::warn!(agent = caller.agent, "{warning}");
    }
    Ok(Json(HelloAnswer {
        lease: api.state.config.lease.as_secs(),
        server_time: schemas::now_ms(),
        roles: Some(granted.roles),
        warnings: granted.warnings,
    }))
}

/// Query of a long-poll: `wait` seconds (capped by the controller), acknowledged ids, batch size.
#[derive(Debug, Deserialize)]
pub struct PollParams {
    pub wait: Option<u64>,
    pub ack: Option<String>,
    pub max: Option<usize>,
}

/// Most ids one poll may acknowledge.
pub const MAX_ACKS: usize = 1000;
/// Longest id accepted in `ack`.
const MAX_ACK_ID: usize = 256;

impl PollParams {
    /// The acknowledged ids, checked (a pure function: fuzzed).
    pub fn acks(&self) -> Result<Vec<String>, Invalid> {
        let acks: Vec<String> = self
            .ack
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if acks.len() > MAX_ACKS {
            return Err(Invalid::bad_request(format!(
                "ack: at most {MAX_ACKS} ids per poll, not {}",
                acks.len()
            )));
        }
        if let Some(long) = acks.iter().find(|a| a.len() > MAX_ACK_ID) {
            return Err(Invalid::bad_request(format!(
                "ack: an id of {} bytes (at most {MAX_ACK_ID})",
                long.len()
            )));
        }
        Ok(acks)
    }
}

/// `GET …/cmd`: the long-poll. 204 when nothing arrived in time; one command, or with
/// `max` > 1 an array of them.
pub async fn cmd(
    State(api): State<Api>,
    caller: Caller,
    params: Result<Query<PollParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let acks = params.acks()?;
    agents::seen(&api.state, &caller.agent).await?;
    let max = params.max.unwrap_or(1).clamp(1, 1000);
    let request = PollRequest {
        agent: caller.agent,
        token_hash: caller.token_hash,
        wait: Duration::from_secs(params.wait.unwrap_or(30).min(schemas::args::MAX_SECONDS)),
        max,
        acks,
    };
    let items = poll::poll(&api.state, request, &api.shutdown).await?;
    if items.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let body = if params.max.unwrap_or(1) <= 1 {
        items.into_iter().next().unwrap_or_default()
    } else {
        // The commands are JSON already: joined, not parsed and written again.
        let mut body = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.push(b']');
        body
    };
    let json = [(header::CONTENT_TYPE, "application/json")];
    Ok((json, Body::from(body)).into_response())
}

/// `POST …/result`: one result or a batch of them, each recorded once.
pub async fn result(
    State(api): State<Api>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchAnswer>, AppError> {
    let agent = &caller.agent;
    match results::parse_results(&body?, caller.gid, caller.nid)? {
        ResultPost::Batch(valid, mut answer) => {
            let outcomes = results::record_all(&api.state, agent, &valid).await?;
            for (r, outcome) in valid.iter().zip(outcomes) {
                outcome.add_to(&mut answer, &r.id);
            }
            Ok(Json(answer))
        }
        ResultPost::One(r) => match results::record(&api.state, agent, &r).await? {
            Outcome::UnknownJob => Err(AppError::new(
                StatusCode::NOT_FOUND,
                "unknown_job",
                format!("no job `{}`", r.id),
            )),
            Outcome::NotATarget => {
                let message = format!("job `{}` was not sent to agent {agent}", r.id);
                Err(AppError::new(StatusCode::NOT_FOUND, "unknown_job", message))
            }
            outcome => {
                let mut answer = BatchAnswer::default();
                outcome.add_to(&mut answer, &r.id);
                Ok(Json(answer))
            }
        },
    }
}

/// `POST …/logs`: log messages, each appended once to `log.<domain>.<name>`.
pub async fn logs(
    State(api): State<Api>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LogsAnswer>, AppError> {
    let (mut messages, mut answer) = logs::parse_batch(&body?)?;
    answer.cut = logs::cut_all(&mut messages, api.state.config.log_max_message);
    let (agent, gid, nid) = (caller.agent, caller.gid, caller.nid);
    answer.stored = logs::append(&api.state, &agent, gid, nid, &mut messages).await?;
    answer.duplicates = messages.len() - answer.stored;
    Ok(Json(answer))
}

/// `POST …/stats`: stats batches, each appended once to `stats:{g:n}`.
pub async fn stats(
    State(api): State<Api>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StatsAnswer>, AppError> {
    let (valid, mut answer) = stats::parse_batch(&body?, caller.gid, caller.nid)?;
    let recorded = stats::record(&api.state, &caller.agent, &valid).await?;
    answer.recorded = recorded.batches;
    answer.duplicates = valid.len() - recorded.batches;
    answer.dropped_metrics = recorded.dropped_metrics;
    Ok(Json(answer))
}

/// `POST …/output`: the lines jobs printed, each batch appended once to `output:<id>`.
pub async fn output(
    State(api): State<Api>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OutputAnswer>, AppError> {
    let (batches, mut answer) = output::parse_batch(&body?)?;
    output::append(&api.state, &caller.agent, batches, &mut answer).await?;
    Ok(Json(answer))
}
