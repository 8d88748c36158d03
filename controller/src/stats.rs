//! Stats intake (DESIGN §7) and the agents' stats for Prometheus.
//!
//! `POST /v1/agents/<gid>/<nid>/stats` (the agent's token, like `…/result`) takes a JSON array
//! of stats batches (or one batch object). Each valid batch is appended to the stream
//! `stats:{g:n}` (field `batch`, `MAXLEN ~ stats_maxlen`) and each of its metrics written to the
//! hash `stats:{g:n}:latest` (metric key → `{"type", "epoch", "interval", …values}`), in one
//! script (`lua/record_stats.lua`).
//!
//! A batch is appended once: the SHA-1 of the newest [`SEEN`] batches is kept in
//! `stats:{g:n}:seen`, and a batch posted again — the agent re-posts what it sent when an answer
//! is lost — is counted in `duplicates` instead. That is more than an agent ever posts at once
//! (its outbox posts 100 rows), and two genuine batches of an agent never hash alike: they differ
//! in epoch or in metrics. The keys expire [`STATS_TTL`] after the agent's last batch.
//!
//! The answer is `{"recorded": n, "duplicates": n, "rejected": [{"index", "error", "message"}]}`;
//! a single invalid batch object is a 400.
//!
//! `GET /metrics/agents` renders every agent's latest values in Prometheus text format with
//! `gid`/`nid` labels (see [`crate::metrics::render_agent_stats`]).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use redis::AsyncCommands;
use schemas::StatsBatch;
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::{agent_json, Api, AppError};
use crate::keys;
use crate::state::Shared;

/// How long an agent's stats keys outlive its last batch (seconds).
pub const STATS_TTL: u64 = 7 * 24 * 3600;
/// Batch hashes remembered per agent, to append a batch posted again only once.
const SEEN: usize = 1000;
/// Longest metric key accepted.
const MAX_KEY: usize = 1024;
const TYPES: [&str; 5] = ["counter", "gauge", "timer", "histogram", "set"];

/// The answer to a posted array of batches.
#[derive(Debug, Default, Serialize)]
pub struct StatsAnswer {
    pub recorded: usize,
    /// Batches appended by an earlier post.
    pub duplicates: usize,
    pub rejected: Vec<RejectedBatch>,
}

#[derive(Debug, Serialize)]
pub struct RejectedBatch {
    pub index: usize,
    pub error: &'static str,
    pub message: String,
}

pub async fn post(
    State(api): State<Api>,
    Path((gid, nid)): Path<(u64, u64)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StatsAnswer>, AppError> {
    let (agent, value) = agent_json(&api, &headers, (gid, nid), body).await?;
    let mut answer = StatsAnswer::default();
    let mut valid = Vec::new();
    match value {
        Value::Array(items) => {
            for (index, item) in items.into_iter().enumerate() {
                match check(item, gid, nid) {
                    Ok(batch) => valid.push(batch),
                    Err(message) => answer.rejected.push(RejectedBatch {
                        index,
                        error: "bad_request",
                        message,
                    }),
                }
            }
        }
        item @ Value::Object(_) => {
            valid.push(check(item, gid, nid).map_err(AppError::bad_request)?)
        }
        _ => {
            return Err(AppError::bad_request(
                "expected a stats batch object or an array of them",
            ))
        }
    }
    answer.recorded = record(&api.state, &agent, &valid).await?;
    answer.duplicates = valid.len() - answer.recorded;
    Ok(Json(answer))
}

/// A batch as posted, checked: it names the agent of the path and only known metric types.
fn check(item: Value, gid: u64, nid: u64) -> Result<StatsBatch, String> {
    let batch: StatsBatch =
        serde_json::from_value(item).map_err(|e| format!("stats batch: {e}"))?;
    if (batch.gid, batch.nid) != (gid, nid) {
        return Err(format!(
            "batch names agent {}:{} but was posted as {gid}:{nid}",
            batch.gid, batch.nid
        ));
    }
    if !(batch.interval.is_finite() && batch.interval > 0.0) {
        return Err(format!("interval must be > 0, not {}", batch.interval));
    }
    for m in &batch.metrics {
        if m.key.is_empty() || m.key.len() > MAX_KEY {
            return Err(format!("metric key must be 1 to {MAX_KEY} bytes"));
        }
        if !TYPES.contains(&m.kind.as_str()) {
            return Err(format!("metric `{}` has unknown type `{}`", m.key, m.kind));
        }
    }
    Ok(batch)
}

/// Appends the batches not appended before to the agent's stream and updates its latest values;
/// returns how many batches were appended.
pub async fn record(
    state: &Shared,
    agent: &str,
    batches: &[StatsBatch],
) -> redis::RedisResult<usize> {
    if batches.is_empty() {
        return Ok(0);
    }
    // Later batches win: the outbox posts them oldest first.
    let mut latest: HashMap<&str, Value> = HashMap::new();
    for batch in batches {
        for m in &batch.metrics {
            let mut values = m.values.clone();
            values.insert("type".into(), json!(m.kind));
            values.insert("epoch".into(), json!(batch.epoch));
            values.insert("interval".into(), json!(batch.interval));
            latest.insert(&m.key, Value::Object(values));
        }
    }
    let mut invocation = state.scripts.record_stats.prepare_invoke();
    invocation
        .key(keys::stats(agent))
        .key(keys::stats_latest(agent))
        .key(keys::stats_seen(agent))
        .arg(state.config.stats_maxlen)
        .arg(STATS_TTL)
        .arg(batches.len())
        .arg(SEEN);
    for batch in batches {
        // The same batch serializes to the same text: its hash is its identity.
        invocation
            .arg(serde_json::to_string(batch).expect("a stats batch serializes"))
            .arg(batch.epoch);
    }
    for (key, values) in &latest {
        invocation.arg(*key).arg(values.to_string());
    }
    let mut conn = state.durable().await?;
    let recorded: usize = invocation.invoke_async(&mut conn).await?;
    state.confirm(&mut conn, &[keys::stats(agent)]).await?;
    state.metrics.stats_recorded(recorded);
    Ok(recorded)
}

/// Agents that ever said hello, as (gid, nid).
async fn known_agents(state: &Shared) -> redis::RedisResult<Vec<(u64, u64)>> {
    let members: Vec<String> = state.conn().zrange(keys::AGENTS, 0, -1).await?;
    Ok(members
        .iter()
        .filter_map(|m| {
            let (g, n) = m.split_once(':')?;
            Some((g.parse().ok()?, n.parse().ok()?))
        })
        .collect())
}

/// Commands waiting in all agents' queues, and delivered but unacknowledged, summed over the
/// known agents (two `LLEN` per agent, pipelined: for `/metrics`).
pub async fn agent_queue_depths(state: &Shared) -> redis::RedisResult<(u64, u64)> {
    let agents = known_agents(state).await?;
    if agents.is_empty() {
        return Ok((0, 0));
    }
    let mut pipe = redis::pipe();
    for (g, n) in &agents {
        let id = keys::agent_id(*g, *n);
        pipe.llen(keys::agent_queue(&id))
            .llen(keys::agent_delivered(&id));
    }
    let lengths: Vec<u64> = pipe.query_async(&mut state.conn()).await?;
    let waiting = lengths.iter().step_by(2).sum();
    let delivered = lengths.iter().skip(1).step_by(2).sum();
    Ok((waiting, delivered))
}

/// `GET /metrics/agents`: every agent's latest stats, with `gid` and `nid` labels.
pub async fn metrics(State(api): State<Api>) -> Result<Response, AppError> {
    let state = &api.state;
    let mut conn = state.conn();
    let agents = known_agents(state).await?;
    let mut pipe = redis::pipe();
    for (g, n) in &agents {
        pipe.hgetall(keys::stats_latest(&keys::agent_id(*g, *n)));
    }
    let latest: Vec<HashMap<String, String>> = if agents.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };
    let rows: Vec<_> = agents.into_iter().zip(latest).collect();
    let text = crate::metrics::render_agent_stats(&rows, schemas::now_ms());
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response())
}
