//! Agents and logs as operators see them over the HTTP API (issue 13): the registry (`agents`,
//! `agent:{g:n}`) with each agent's latest stats (`stats:{g:n}:latest`), an agent's recent stats
//! batches and jobs, and a log stream (`log.<domain>.<name>`). Redis only; `http::fleet`
//! serves it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::keys;
use crate::redis_conn::Conn;

/// An agent as the registry knows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Agent {
    /// "gid:nid".
    pub agent: String,
    pub gid: u64,
    pub nid: u64,
    /// Seen within the controller's `--live-window`.
    pub online: bool,
    /// When it last polled or said hello (ms since the epoch).
    pub last_seen: u64,
    /// What it said in its hello: hostname, os, arch, version, started; and its roles.
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub version: String,
    pub started: u64,
    pub roles: Vec<String>,
    /// Its latest value of each metric (`stats:{g:n}:latest`): key → `{"type", "epoch", …}`.
    pub stats: BTreeMap<String, Value>,
}

/// Every known agent, by (gid, nid); `online` = seen at or after `live_since` (ms).
pub async fn agents(conn: &mut Conn, live_since: u64) -> redis::RedisResult<Vec<Agent>> {
    let members: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(keys::AGENTS)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    let members: Vec<(String, u64)> = members
        .into_iter()
        .filter(|(a, _)| a.split_once(':').is_some())
        .collect();
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (a, _) in &members {
        pipe.hgetall(keys::agent(a)).hgetall(keys::stats_latest(a));
    }
    type Hash = BTreeMap<String, String>;
    let hashes: Vec<Hash> = pipe.query_async(conn).await?;
    let mut all: Vec<Agent> = members
        .into_iter()
        .zip(hashes.chunks(2))
        .map(|((agent, seen), pair)| build(agent, seen, live_since, &pair[0], &pair[1]))
        .collect();
    all.sort_by_key(|a| (a.gid, a.nid));
    Ok(all)
}

fn build(
    agent: String,
    last_seen: u64,
    live_since: u64,
    facts: &BTreeMap<String, String>,
    latest: &BTreeMap<String, String>,
) -> Agent {
    let (gid, nid) = keys::split_agent(&agent);
    let text = |f: &str| facts.get(f).cloned().unwrap_or_default();
    Agent {
        gid,
        nid,
        online: last_seen >= live_since,
        last_seen,
        hostname: text("hostname"),
        os: text("os"),
        arch: text("arch"),
        version: text("version"),
        started: text("started").parse().unwrap_or(0),
        roles: serde_json::from_str(&text("roles")).unwrap_or_default(),
        stats: latest
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), serde_json::from_str(v).ok()?)))
            .collect(),
        agent,
    }
}

/// One agent: its registry entry and latest stats, its newest `batches` stats batches (oldest
/// first, for charts) and the ids of its newest `jobs` jobs (newest first); `None` when unknown.
pub async fn agent(
    conn: &mut Conn,
    agent_id: &str,
    live_since: u64,
    batches: usize,
    jobs: usize,
) -> redis::RedisResult<Option<(Agent, Vec<Value>, Vec<String>)>> {
    type Hash = BTreeMap<String, String>;
    let seen: Option<u64> = redis::cmd("ZSCORE")
        .arg(keys::AGENTS)
        .arg(agent_id)
        .query_async(conn)
        .await?;
    let Some(seen) = seen else { return Ok(None) };
    // All in the agent's slot: one pipeline on a cluster too.
    let (facts, latest, stream): (Hash, Hash, Vec<(String, Hash)>) = redis::pipe()
        .hgetall(keys::agent(agent_id))
        .hgetall(keys::stats_latest(agent_id))
        .cmd("XREVRANGE")
        .arg(keys::stats(agent_id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(batches)
        .query_async(conn)
        .await?;
    let recent: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys::jobs_of_agent(agent_id))
        .arg(0)
        .arg(jobs.saturating_sub(1))
        .arg("REV")
        .query_async(conn)
        .await?;
    let agent = build(agent_id.to_owned(), seen, live_since, &facts, &latest);
    let mut series: Vec<Value> = stream
        .into_iter()
        .filter_map(|(_, f)| f.get("batch").and_then(|b| serde_json::from_str(b).ok()))
        .collect();
    series.reverse();
    Ok(Some((agent, series, recent)))
}

/// One forwarded log message, with its stream entry id.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogEntry {
    /// The stream entry's id: ask for the entries after it to go on.
    pub id: String,
    pub fields: BTreeMap<String, String>,
}

/// Up to `count` messages of `log.<domain>.<name>` after entry `after` ("0": from the oldest
/// kept; "$": none, only what comes later is followed).
pub async fn logs(
    conn: &mut Conn,
    domain: &str,
    name: &str,
    after: &str,
    count: usize,
) -> redis::RedisResult<Vec<LogEntry>> {
    let stream = keys::log_stream(domain, name);
    let entries = crate::jobs::entries_after(conn, &stream, after, count).await?;
    Ok(entries
        .into_iter()
        .map(|(id, fields)| LogEntry { id, fields })
        .collect())
}

/// The newest `count` messages of `log.<domain>.<name>`, oldest first: one `XREVRANGE`.
pub async fn newest_logs(
    conn: &mut Conn,
    domain: &str,
    name: &str,
    count: usize,
) -> redis::RedisResult<Vec<LogEntry>> {
    let newest: Vec<(String, BTreeMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg(keys::log_stream(domain, name))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(newest
        .into_iter()
        .rev()
        .map(|(id, fields)| LogEntry { id, fields })
        .collect())
}

/// The id of the newest entry of `log.<domain>.<name>` ("0" when empty): where a follower that
/// wants only new messages starts.
pub async fn logs_end(conn: &mut Conn, domain: &str, name: &str) -> redis::RedisResult<String> {
    let newest = newest_logs(conn, domain, name, 1).await?;
    Ok(newest.into_iter().next().map_or("0".to_owned(), |e| e.id))
}
