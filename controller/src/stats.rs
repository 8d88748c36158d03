//! Stats intake (DESIGN §7) and the agents' stats for Prometheus.
//!
//! `POST /v1/agents/<gid>/<nid>/stats` (the agent's token, like `…/result`) takes a JSON array
//! of stats batches (or one batch object). Each valid batch is appended to the stream
//! `stats:{g:n}` (field `batch`, `MAXLEN ~ stats_maxlen`) and each of its metrics written to the
//! hash `stats:{g:n}:latest` (metric key → `{"type", "epoch", "interval", …values}`) by
//! `lua/record_stats.lua`.
//!
//! Bounds, since an agent can invent metric names: `:latest` holds at most
//! `--stats-max-metrics` names (values of new names beyond that are dropped and counted in the
//! answer's `dropped_metrics` and in `jsacc_stats_metrics_dropped_total`; known names are
//! still updated), a key is at most [`MAX_KEY`] bytes and a metric's values at most
//! [`MAX_VALUES`]; the three keys expire `--stats-ttl` after the agent's last post.
//!
//! A batch is appended once: the SHA-256 of the newest [`SEEN`] batches is kept in
//! `stats:{g:n}:seen`, and a batch posted again — the agent re-posts what it sent when an answer
//! is lost — is counted in `duplicates` instead. That is more than an agent ever posts at once
//! (its outbox posts 100 rows), and two genuine batches of an agent never hash alike: they differ
//! in epoch or in metrics.
//!
//! No script runs long, however large the post (up to `--max-stats-body`): the latest values
//! are written [`CHUNK`] metrics per script call, then the batches are appended [`CHUNK`] per
//! call, each appended with its mark in one script. The order makes a crash between two calls
//! harmless: the latest writes are idempotent (a field set to the same value), and a batch
//! counts as recorded only once it is appended and marked, together; so the agent's retry
//! rewrites the same values and appends what was not yet appended, never twice. Batches
//! already marked when the post arrives are skipped before anything is written: a retried post
//! does not overwrite newer values with its old ones.
//!
//! The answer is `{"recorded": n, "duplicates": n, "rejected": [{"index", "error", "message"}]}`
//! with `"dropped_metrics": n` when names were dropped; a single invalid batch object is a 400.
//!
//! `GET /metrics/agents` renders every agent's latest values in Prometheus text format with
//! `gid`/`nid` labels (see [`crate::metrics::render_agent_stats`]); it and the agent-queue
//! depths of `/metrics` cost a Redis call per agent, so each is computed at most once per
//! [`crate::metrics::SCRAPE_CACHE`], by one request at a time.

use std::collections::HashMap;

use redis::AsyncCommands;
use schemas::{RejectedBatch, StatsAnswer, StatsBatch};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::intake::{self, Invalid, Shape};
use crate::keys;
use crate::state::Shared;

/// Batch hashes remembered per agent, to append a batch posted again only once.
const SEEN: usize = 1000;
/// Longest metric key accepted.
pub const MAX_KEY: usize = 1024;
/// Longest values of one metric (their JSON, without key and type); a timer's eight numbers
/// take about 250 bytes.
pub const MAX_VALUES: usize = 1024;
/// Metrics (or batches) per script call.
pub const CHUNK: usize = 500;
const TYPES: [&str; 5] = ["counter", "gauge", "timer", "histogram", "set"];

/// Parses and checks a stats post of agent `gid:nid` (all that happens before Redis; a pure
/// function: fuzzed): the valid batches, and the answer so far (the rejected ones). A single
/// batch object that is invalid, or a body that is neither an object nor an array, is an error.
pub fn parse_batch(
    body: &[u8],
    gid: u64,
    nid: u64,
) -> Result<(Vec<StatsBatch>, StatsAnswer), Invalid> {
    let expected = "a stats batch object or an array of them";
    let posted = intake::batch(body, Shape::ObjectOrArray, expected, |item| {
        check(item, gid, nid)
    })?;
    let rejected = posted
        .refused
        .into_iter()
        .map(|r| RejectedBatch {
            index: r.index,
            error: r.why.code.to_owned(),
            message: r.why.message,
        })
        .collect();
    let answer = StatsAnswer {
        rejected,
        ..StatsAnswer::default()
    };
    Ok((posted.valid, answer))
}

/// A batch as posted, checked: it names the agent of the path, only known metric types, and
/// keys and values within their bounds.
fn check(item: Value, gid: u64, nid: u64) -> Result<StatsBatch, Invalid> {
    let batch: StatsBatch = serde_json::from_value(item)
        .map_err(|e| Invalid::bad_request(format!("stats batch: {e}")))?;
    if (batch.gid, batch.nid) != (gid, nid) {
        return Err(Invalid::mismatched_agent(
            (batch.gid, batch.nid),
            (gid, nid),
        ));
    }
    let bad = Invalid::bad_request;
    if !(batch.interval.is_finite() && batch.interval > 0.0) {
        return Err(bad(format!("interval must be > 0, not {}", batch.interval)));
    }
    for m in &batch.metrics {
        if m.key.is_empty() || m.key.len() > MAX_KEY {
            return Err(bad(format!("metric key must be 1 to {MAX_KEY} bytes")));
        }
        if !TYPES.contains(&m.kind.as_str()) {
            return Err(bad(format!(
                "metric `{}` has unknown type `{}`",
                m.key, m.kind
            )));
        }
        let values = serde_json::to_string(&m.values).map_or(usize::MAX, |v| v.len());
        if values > MAX_VALUES {
            return Err(bad(format!(
                "metric `{}`: its values take more than {MAX_VALUES} bytes",
                m.key
            )));
        }
    }
    Ok(batch)
}

/// What [`record`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Batches appended now (the others were appended before).
    pub batches: usize,
    /// Metric names not stored: `:latest` was full.
    pub dropped_metrics: usize,
}

/// Appends the batches not appended before to the agent's stream and updates its latest values
/// (see the module's notes on chunks and crashes).
pub async fn record(
    state: &Shared,
    agent: &str,
    batches: &[StatsBatch],
) -> redis::RedisResult<Recorded> {
    if batches.is_empty() {
        return Ok(Recorded::default());
    }
    // The same batch serializes to the same text: its hash is its identity.
    let texts: Vec<String> = batches
        .iter()
        .map(|b| serde_json::to_string(b).expect("a stats batch serializes"))
        .collect();
    let hashes: Vec<String> = texts
        .iter()
        .map(|t| hex::encode(Sha256::digest(t)))
        .collect();
    let mut conn = state.durable().await?;
    let seen: Vec<Option<f64>> = redis::cmd("ZMSCORE")
        .arg(keys::stats_seen(agent))
        .arg(&hashes)
        .query_async(&mut conn)
        .await?;
    let fresh: Vec<usize> = (0..batches.len()).filter(|&i| seen[i].is_none()).collect();
    let mut done = Recorded::default();
    let latest = latest_values(fresh.iter().map(|&i| &batches[i]));
    for chunk in latest.chunks(CHUNK) {
        let call = script_call(state, agent, &[], chunk);
        let (_, dropped): (usize, usize) = call.invoke_async(&mut conn).await?;
        done.dropped_metrics += dropped;
    }
    for chunk in fresh.chunks(CHUNK) {
        let appended: Vec<_> = chunk
            .iter()
            .map(|&i| (texts[i].as_str(), batches[i].epoch, hashes[i].as_str()))
            .collect();
        let call = script_call(state, agent, &appended, &[]);
        let (added, _): (usize, usize) = call.invoke_async(&mut conn).await?;
        done.batches += added;
    }
    let written = [keys::stats(agent), keys::stats_latest(agent)];
    state.confirm(&mut conn, &written).await?;
    state.metrics.stats_recorded(done.batches);
    state.metrics.stats_metrics_dropped(done.dropped_metrics);
    Ok(done)
}

/// Each metric key of the batches with its latest values, JSON (`{"type", "epoch", "interval",
/// …values}`); later batches win (the outbox posts them oldest first).
fn latest_values<'a>(batches: impl Iterator<Item = &'a StatsBatch>) -> Vec<(&'a str, String)> {
    let mut latest: HashMap<&str, String> = HashMap::new();
    for batch in batches {
        for m in &batch.metrics {
            let mut values = m.values.clone();
            values.insert("type".into(), json!(m.kind));
            values.insert("epoch".into(), json!(batch.epoch));
            values.insert("interval".into(), json!(batch.interval));
            latest.insert(&m.key, Value::Object(values).to_string());
        }
    }
    latest.into_iter().collect()
}

/// One call of `record_stats.lua`: append `batches` (text, epoch, hash) once each, and write
/// `latest` (metric key, values JSON). It answers (batches appended, metric names dropped).
fn script_call<'a>(
    state: &'a Shared,
    agent: &str,
    batches: &[(&str, u64, &str)],
    latest: &[(&str, String)],
) -> redis::ScriptInvocation<'a> {
    let config = &state.config;
    let mut invocation = state.scripts.record_stats.prepare_invoke();
    invocation
        .key(keys::stats(agent))
        .key(keys::stats_latest(agent))
        .key(keys::stats_seen(agent))
        .arg(config.stats_maxlen)
        .arg(config.stats_ttl.as_secs())
        .arg(batches.len())
        .arg(SEEN)
        .arg(config.stats_max_metrics);
    for (text, epoch, hash) in batches {
        invocation.arg(*text).arg(*epoch).arg(*hash);
    }
    for (key, values) in latest {
        invocation.arg(*key).arg(values);
    }
    invocation
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
/// known agents (two `LLEN` per agent, pipelined: for `/metrics`); computed at most once per
/// [`crate::metrics::SCRAPE_CACHE`].
pub async fn agent_queue_depths(state: &Shared) -> redis::RedisResult<(u64, u64)> {
    let cache = &state.metrics.cache.queue_depths;
    cache.get_or_try(|| count_queue_depths(state)).await
}

async fn count_queue_depths(state: &Shared) -> redis::RedisResult<(u64, u64)> {
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

/// Every agent's latest stats in Prometheus text, with `gid` and `nid` labels (`GET
/// /metrics/agents`); rendered at most once per [`crate::metrics::SCRAPE_CACHE`].
pub async fn agents_text(state: &Shared) -> redis::RedisResult<String> {
    let cache = &state.metrics.cache.agent_stats;
    cache.get_or_try(|| render_agents(state)).await
}

async fn render_agents(state: &Shared) -> redis::RedisResult<String> {
    let agents = known_agents(state).await?;
    let mut pipe = redis::pipe();
    for (g, n) in &agents {
        pipe.hgetall(keys::stats_latest(&keys::agent_id(*g, *n)));
    }
    let latest: Vec<HashMap<String, String>> = if agents.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut state.conn()).await?
    };
    let rows: Vec<_> = agents.into_iter().zip(latest).collect();
    Ok(crate::metrics::render_agent_stats(&rows, schemas::now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: u64, metrics: Value) -> Value {
        json!({"gid": 1, "nid": 2, "epoch": epoch, "interval": 10.0, "metrics": metrics})
    }

    fn gauge(key: &str, value: f64) -> Value {
        json!({"key": key, "type": "gauge", "value": value})
    }

    #[test]
    fn each_batch_of_an_array_is_checked_on_its_own() {
        let body = json!([
            batch(1, json!([gauge("a", 1.0)])),
            batch(2, json!([{"key": "b", "type": "weird"}])),
            batch(3, json!([gauge(&"k".repeat(MAX_KEY + 1), 1.0)])),
            {"gid": 9, "nid": 2, "epoch": 4, "interval": 1.0, "metrics": []},
            batch(5, json!([{"key": "big", "type": "gauge", "value": "v".repeat(MAX_VALUES)}])),
        ]);
        let (valid, answer) = parse_batch(body.to_string().as_bytes(), 1, 2).expect("parses");
        assert_eq!(valid.len(), 1);
        let rejected: Vec<usize> = answer.rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, [1, 2, 3, 4]);
        assert!(
            answer.rejected[3].message.contains("values"),
            "{:?}",
            answer.rejected[3]
        );
    }

    #[test]
    fn a_single_invalid_batch_and_malformed_bodies_are_errors_not_panics() {
        let bad = batch(1, json!([{"key": "", "type": "gauge"}])).to_string();
        for body in [bad.as_bytes(), b"not json", b"42", b"", b"[", b"\xff"] {
            assert!(parse_batch(body, 1, 2).is_err(), "{body:?}");
        }
        let one = batch(1, json!([gauge("a", 1.0)])).to_string();
        let (valid, answer) = parse_batch(one.as_bytes(), 1, 2).expect("one batch");
        assert_eq!((valid.len(), answer.rejected.len()), (1, 0));
    }

    #[test]
    fn later_batches_win_the_latest_values() {
        let body = json!([
            batch(1, json!([gauge("a", 1.0), gauge("b", 1.0)])),
            batch(2, json!([gauge("a", 2.0)])),
        ]);
        let (valid, _) = parse_batch(body.to_string().as_bytes(), 1, 2).expect("parses");
        let latest: HashMap<&str, Value> = latest_values(valid.iter())
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_str(&v).expect("JSON")))
            .collect();
        assert_eq!(latest.len(), 2);
        assert_eq!(
            (latest["a"]["value"].clone(), latest["a"]["epoch"].clone()),
            (json!(2.0), json!(2))
        );
        assert_eq!(latest["b"]["type"], "gauge");
    }

    #[test]
    fn the_answer_counts_dropped_metrics_when_there_are_some() {
        let answer = serde_json::to_value(StatsAnswer::default()).expect("serializes");
        assert_eq!(
            answer,
            json!({"recorded": 0, "duplicates": 0, "rejected": []})
        );
        let dropped = StatsAnswer {
            dropped_metrics: 3,
            ..StatsAnswer::default()
        };
        let answer = serde_json::to_value(dropped).expect("serializes");
        assert_eq!(answer["dropped_metrics"], 3);
    }
}
