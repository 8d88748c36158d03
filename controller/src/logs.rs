//! Log intake (DESIGN §4, §8): `POST /v1/agents/<gid>/<nid>/logs` takes a JSON array of log
//! messages (an item may itself be an array of messages: the agent posts one outbox row per
//! batch) and appends each to the stream `log.<domain>.<name>` with the agent's `gid` and `nid`,
//! capped by `MAXLEN ~ log_maxlen`; messages of level ≥ 8 are copied to `alerts` too.
//!
//! Each message is appended once: per stream, the largest id appended for each agent is kept
//! in `{<stream>}:seq` and updated by the same script (`lua/append_logs.lua`), so a batch
//! posted again after a lost answer adds nothing. The mark shares its stream's slot, so this
//! holds on a Redis Cluster too. Agent ids only increase (docs/protocol.md).
//!
//! Streams are appended concurrently (the multiplexed connection pipelines the scripts); the
//! chunks of one stream in order, which the high-water mark needs.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use schemas::LogMessage;

use crate::api::{agent_json, Api, AppError};
use crate::keys;
use crate::redis_conn::Conn;
use crate::state::Shared;

/// Lowest level copied to `alerts`.
pub const ALERT_LEVEL: u8 = 8;
/// Messages per script call.
const CHUNK: usize = 500;

/// The answer to a posted batch.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct LogsAnswer {
    /// Messages appended to their stream now.
    pub stored: usize,
    /// Messages appended by an earlier post.
    pub duplicates: usize,
    /// Items that are not log messages (dropped), with the first reason.
    pub rejected: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/agents/<gid>/<nid>/logs`.
pub async fn post(
    State(api): State<Api>,
    Path((gid, nid)): Path<(u64, u64)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LogsAnswer>, AppError> {
    let (agent, value) = agent_json(&api, &headers, (gid, nid), body).await?;
    let Value::Array(items) = value else {
        return Err(AppError::bad_request(
            "expected an array of log messages (or of arrays of them)",
        ));
    };
    let mut answer = LogsAnswer::default();
    let mut messages = flatten(items, &mut answer);
    answer.stored = append(&api.state, &agent, gid, nid, &mut messages).await?;
    answer.duplicates = messages.len() - answer.stored;
    Ok(Json(answer))
}

/// The messages of the items, in order; what is not a message is counted as rejected.
fn flatten(items: Vec<Value>, answer: &mut LogsAnswer) -> Vec<LogMessage> {
    let mut messages = Vec::with_capacity(items.len());
    let mut take = |item: Value, answer: &mut LogsAnswer| match serde_json::from_value::<LogMessage>(
        item,
    ) {
        Ok(m) if braced(&m) => {
            answer.rejected += 1;
            answer.reason.get_or_insert_with(|| {
                    "log message: domain and name must not contain `{` or `}` (Redis Cluster hash tags)".into()
                });
        }
        Ok(m) => messages.push(m),
        Err(e) => {
            answer.rejected += 1;
            answer
                .reason
                .get_or_insert_with(|| format!("log message: {e}"));
        }
    };
    for item in items {
        match item {
            Value::Array(batch) => batch.into_iter().for_each(|m| take(m, answer)),
            other => take(other, answer),
        }
    }
    messages
}

/// A stream `log.<domain>.<name>` with a brace would not share a slot with its high-water mark.
fn braced(m: &LogMessage) -> bool {
    schemas::command::has_hash_tag_char(&m.domain) || schemas::command::has_hash_tag_char(&m.name)
}

/// Appends messages to their streams (and `alerts`), each stream in id order; returns how many
/// were appended to their own stream now (the alert copies are not counted), once replicas
/// hold them (see [`Shared::confirm`]).
pub async fn append(
    state: &Shared,
    agent: &str,
    gid: u64,
    nid: u64,
    messages: &mut [LogMessage],
) -> redis::RedisResult<usize> {
    // Sorted once: every stream's share (and the alerts) is then in id order too.
    messages.sort_by_key(|m| m.id);
    let messages = &*messages;
    let mut streams: BTreeMap<String, Vec<&LogMessage>> = BTreeMap::new();
    for m in messages {
        streams
            .entry(keys::log_stream(&m.domain, &m.name))
            .or_default()
            .push(m);
    }
    let alerts: Vec<&LogMessage> = messages.iter().filter(|m| m.level >= ALERT_LEVEL).collect();
    let conn = state.durable().await?;
    let to = Stream { agent, gid, nid };
    let appended = futures::future::try_join_all(
        streams
            .iter()
            .map(|(stream, ms)| append_stream(state, conn.clone(), &to, stream, ms)),
    );
    let alerted = append_stream(state, conn.clone(), &to, keys::ALERTS, &alerts);
    let (appended, _) = futures::future::try_join(appended, alerted).await?;
    let mut written: Vec<String> = streams.into_keys().collect();
    written.push(keys::ALERTS.to_owned());
    state.confirm(&mut conn.clone(), &written).await?;
    Ok(appended.iter().sum())
}

/// Whose messages a stream gets.
struct Stream<'a> {
    agent: &'a str,
    gid: u64,
    nid: u64,
}

/// Appends one stream's messages (in id order), chunk after chunk.
async fn append_stream(
    state: &Shared,
    mut conn: Conn,
    to: &Stream<'_>,
    stream: &str,
    messages: &[&LogMessage],
) -> redis::RedisResult<usize> {
    let mut added = 0;
    for chunk in messages.chunks(CHUNK) {
        let mut invocation = state.scripts.append_logs.prepare_invoke();
        invocation
            .key(stream)
            .key(keys::stream_seq(stream))
            .arg(to.agent)
            .arg(state.config.log_maxlen)
            .arg(to.gid)
            .arg(to.nid);
        for m in chunk {
            invocation
                .arg(m.id)
                .arg(&m.jobid)
                .arg(&m.domain)
                .arg(&m.name)
                .arg(m.epoch)
                .arg(m.level)
                .arg(&m.data);
        }
        let n: usize = invocation.invoke_async(&mut conn).await?;
        added += n;
    }
    Ok(added)
}
