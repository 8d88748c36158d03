//! Jobs as operators see them over the HTTP API (issue 13): submitting a command, reading a
//! job's record (`job:<id>`, never consuming `cmds_queue_<id>`), listing the history
//! (`jobs:all`, `jobs:agent:<g:n>`, `jobs:name:<d>/<n>`), reading its live output
//! (`output:<id>`) and killing it on its agents. Redis only; `http::jobs` serves it.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::intake::Invalid;
use crate::keys;
use crate::redis_conn::Conn;
use crate::state::Shared;

/// One agent's part of a job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentPart {
    /// Its final state (`OK`, `ERROR`, `TIMEOUT`, `KILLED`), or null while it runs.
    pub state: Option<String>,
    /// Its final result (DESIGN §3), when asked for and there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// A job's record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Record {
    pub id: String,
    /// `QUEUED`, `RUNNING`, or the final state once every target answered.
    pub state: String,
    /// The command as submitted.
    pub cmd: Value,
    pub targets: Vec<String>,
    /// When it was routed, first handed to an agent, and ended (ms since the epoch).
    pub created: Option<u64>,
    pub started: Option<u64>,
    pub ended: Option<u64>,
    pub submitted_by: Option<String>,
    /// By agent ("gid:nid"): its state and, for one job's page, its result. A target of a
    /// rollout not released yet is `PENDING`.
    pub agents: BTreeMap<String, AgentPart>,
    /// A rollout's progress (a fanout in batches), absent for other jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Progress>,
}

impl Record {
    /// The record in `fields` (a `job:<id>` hash), with the agents' results when `results`.
    fn from_fields(id: &str, fields: &BTreeMap<String, String>, results: bool) -> Record {
        let number = |f: &str| fields.get(f).and_then(|v| v.parse().ok());
        let targets: Vec<String> = fields
            .get("targets")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        let rollout = crate::rollout::Progress::from_fields(fields);
        let released = rollout.as_ref().map_or(targets.len(), |r| r.released);
        let agents = targets
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let result = results
                    .then(|| fields.get(&format!("result:{a}")))
                    .flatten()
                    .and_then(|r| serde_json::from_str(r).ok());
                let state = fields.get(&format!("state:{a}")).cloned();
                let state = state.or_else(|| (i >= released).then(|| "PENDING".to_owned()));
                (a.clone(), AgentPart { state, result })
            })
            .collect();
        Record {
            id: id.to_owned(),
            state: fields.get("state").cloned().unwrap_or_default(),
            cmd: fields
                .get("cmd")
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or(Value::Null),
            targets,
            created: number("created"),
            started: number("started"),
            ended: number("ended"),
            submitted_by: fields.get("submitted_by").cloned(),
            agents,
            rollout,
        }
    }

    /// Whether every target has answered (or the job was refused).
    pub fn is_final(&self) -> bool {
        schemas::JobState::parse(&self.state).is_some_and(|s| s.is_final())
    }
}

/// Job `id`'s record with its agents' results; `None` when there is no such job (never routed,
/// or expired).
pub async fn record(conn: &mut Conn, id: &str) -> redis::RedisResult<Option<Record>> {
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::job(id))
        .query_async(conn)
        .await?;
    Ok((!fields.is_empty()).then(|| Record::from_fields(id, &fields, true)))
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only jobs sent to this agent ("gid:nid").
    pub agent: Option<String>,
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs of this `args.domain` and `args.name`.
    pub name: Option<(String, String)>,
    /// Only jobs routed at or after this time (ms).
    pub since: Option<u64>,
    pub limit: usize,
}

/// Most ids one listing reads from a history before it stops (a filter that matches little).
pub const SCAN_MAX: usize = 10_000;
/// Ids read per page.
const PAGE: usize = 500;

/// The jobs that match `filter`, newest first (without results), and whether the scan stopped
/// at [`SCAN_MAX`] before it reached the end of the history.
pub async fn list(conn: &mut Conn, filter: &Filter) -> redis::RedisResult<(Vec<Record>, bool)> {
    let key = match (&filter.name, &filter.agent) {
        (Some((d, n)), _) => keys::jobs_named(d, n),
        (None, Some(a)) => keys::jobs_of_agent(a),
        (None, None) => keys::JOBS_ALL.to_owned(),
    };
    let min = filter.since.map_or("-inf".to_owned(), |s| s.to_string());
    let (mut found, mut seen) = (Vec::new(), HashSet::new());
    let mut max = "+inf".to_owned();
    while found.len() < filter.limit {
        if seen.len() >= SCAN_MAX {
            return Ok((found, true));
        }
        // Paged by score, not offset: each page starts where the last one ended (ties at the
        // boundary are read again and skipped), so a deep scan stays linear.
        let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(&max)
            .arg(&min)
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(PAGE)
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        let fresh: Vec<(String, f64)> = page
            .iter()
            .filter(|(id, _)| !seen.contains(id))
            .cloned()
            .collect();
        if fresh.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        for (id, _) in &fresh {
            pipe.hgetall(keys::job(id));
        }
        let records: Vec<BTreeMap<String, String>> = pipe.query_async(conn).await?;
        for ((id, _), fields) in fresh.iter().zip(records) {
            seen.insert(id.clone());
            if fields.is_empty() {
                continue; // expired with its job
            }
            let r = Record::from_fields(id, &fields, false);
            if filter.state.as_ref().is_none_or(|s| *s == r.state) {
                found.push(r);
                if found.len() == filter.limit {
                    break;
                }
            }
        }
        let last = page.last().map_or(0.0, |(_, score)| *score);
        max = format!("{last}");
        if page.len() < PAGE && fresh.len() == page.len() {
            break; // the end of the history
        }
    }
    Ok((found, false))
}

/// Reads the body of `POST /v1/jobs` (a pure function: fuzzed): a command (DESIGN §3; `id`
/// optional: a new one is given), stamped `submitted_by` `by`; returns its text to queue, at
/// most `max` bytes, and the command it parses as.
pub fn parse_submission(
    body: &[u8],
    by: &str,
    max: usize,
) -> Result<(Vec<u8>, schemas::Command), Invalid> {
    let mut cmd: Value =
        serde_json::from_slice(body).map_err(|e| Invalid::bad_request(format!("not JSON: {e}")))?;
    let Some(fields) = cmd.as_object_mut() else {
        return Err(Invalid::bad_request(
            "a command is a JSON object (DESIGN §3)",
        ));
    };
    if !fields.contains_key("id") {
        let id = uuid::Uuid::new_v4().simple().to_string();
        fields.insert("id".into(), Value::String(id));
    }
    fields.insert("submitted_by".into(), Value::String(by.to_owned()));
    let raw = serde_json::to_vec(&cmd).map_err(|e| Invalid::bad_request(e.to_string()))?;
    if raw.len() > max {
        let message = format!("the command takes {} bytes (at most {max})", raw.len());
        return Err(Invalid::bad_request(message));
    }
    let (parsed, _) = schemas::Command::parse(&raw)
        .map_err(|(_, e)| Invalid::bad_request(format!("command: {e}")))?;
    Ok((raw, parsed))
}

/// Checks an operator's command ([`parse_submission`]) and pushes it onto `cmds_queue` as
/// submitted by `by`; returns its id once `--redis-wait-replicas` replicas hold it.
pub async fn submit(state: &Shared, body: &[u8], by: &str) -> Result<String, SubmitError> {
    let (raw, parsed) = parse_submission(body, by, state.config.max_command)?;
    let mut conn = state.durable().await?;
    redis::cmd("LPUSH")
        .arg(keys::CMDS_QUEUE)
        .arg(&raw)
        .query_async::<()>(&mut conn)
        .await?;
    state
        .confirm(&mut conn, &[keys::CMDS_QUEUE.to_owned()])
        .await?;
    Ok(parsed.id)
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Kills job `id` on each of its agents that has not answered yet (an internal `kill` each,
/// submitted by `by`); the ids of those kill commands, or `None` when there is no such job.
/// A rollout is stopped first: its targets not released yet end `KILLED` at once.
pub async fn kill(state: &Shared, id: &str, by: &str) -> Result<Option<Vec<String>>, SubmitError> {
    crate::rollout::kill(state, id).await?;
    let Some(record) = record(&mut state.conn(), id).await? else {
        return Ok(None);
    };
    let mut kills = Vec::new();
    for (agent, part) in &record.agents {
        if part.state.is_some() {
            continue; // it ended there already
        }
        kills.push(kill_on(state, id, agent, by).await?);
    }
    Ok(Some(kills))
}

/// Submits an internal `kill` of job `id` to `agent` ("gid:nid") as `by`; its id.
pub async fn kill_on(
    state: &Shared,
    id: &str,
    agent: &str,
    by: &str,
) -> Result<String, SubmitError> {
    let (gid, nid) = keys::split_agent(agent);
    let cmd = serde_json::json!({
        "id": format!("kill-{}", uuid::Uuid::new_v4().simple()),
        "gid": gid, "nid": nid, "cmd": "kill", "args": {"id": id},
    });
    submit(state, cmd.to_string().as_bytes(), by).await
}

/// One line of a job's live output.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Line {
    /// The stream entry's id: ask for the lines after it to go on.
    pub id: String,
    pub agent: String,
    pub fd: u8,
    pub level: u8,
    pub line: String,
    pub time: u64,
}

/// Where an `XRANGE` of the entries after `after` starts ("0": from the first); `None` after
/// the largest possible id, where Redis refuses an exclusive start and nothing can follow.
pub(crate) fn range_start(after: &str) -> Option<String> {
    match after {
        "0" => Some("-".to_owned()),
        "18446744073709551615-18446744073709551615" => None,
        other => Some(format!("({other}")),
    }
}

/// Up to `count` entries of stream `key` after entry `after` ("0": from the first), with their
/// fields.
pub(crate) async fn entries_after(
    conn: &mut Conn,
    key: &str,
    after: &str,
    count: usize,
) -> redis::RedisResult<Vec<(String, BTreeMap<String, String>)>> {
    let Some(start) = range_start(after) else {
        return Ok(Vec::new());
    };
    redis::cmd("XRANGE")
        .arg(key)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
}

/// Up to `count` lines of job `id`'s output after stream entry `after` ("0": from the start).
pub async fn output(
    conn: &mut Conn,
    id: &str,
    after: &str,
    count: usize,
) -> redis::RedisResult<Vec<Line>> {
    let entries = entries_after(conn, &keys::output(id), after, count).await?;
    Ok(entries
        .into_iter()
        .map(|(sid, f)| {
            let number = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            Line {
                id: sid,
                agent: f.get("agent").cloned().unwrap_or_default(),
                fd: number("fd") as u8,
                level: number("level") as u8,
                line: f.get("line").cloned().unwrap_or_default(),
                time: number("time"),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: usize = 8 << 10;

    fn refused(body: &str) -> String {
        let e = parse_submission(body.as_bytes(), "otto", MAX).expect_err(body);
        assert_eq!(e.code, "bad_request");
        e.message
    }

    #[test]
    fn a_command_is_given_an_id_and_its_submitter() {
        let body = json!({"gid": 1, "nid": 2, "cmd": "ping"}).to_string();
        let (raw, cmd) = parse_submission(body.as_bytes(), "otto", MAX).unwrap();
        assert_eq!((cmd.gid, cmd.nid, cmd.cmd.as_str()), (1, Some(2), "ping"));
        assert!(schemas::command::valid_id(&cmd.id));
        let queued: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            (&queued["id"], &queued["submitted_by"]),
            (&json!(cmd.id), &json!("otto"))
        );
        // Its own id is kept; a `submitted_by` of its own is replaced.
        let body = json!({"id": "a1", "gid": 1, "nid": 2, "cmd": "ping", "submitted_by": "x"});
        let (raw, cmd) = parse_submission(body.to_string().as_bytes(), "otto", MAX).unwrap();
        assert_eq!(cmd.id, "a1");
        assert!(String::from_utf8(raw)
            .unwrap()
            .contains(r#""submitted_by":"otto""#));
    }

    #[test]
    fn a_bad_command_is_refused_naming_the_field() {
        let cases = [
            ("{nope".to_owned(), "not JSON"),
            ("\u{7f}\u{0}".to_owned(), "not JSON"),
            (r#"[1, "ping"]"#.to_owned(), "a command is a JSON object"),
            (r#"{"nid": 1, "cmd": "ping"}"#.to_owned(), "command: missing field `gid`"),
            (r#"{"gid": "1", "nid": 1, "cmd": "ping"}"#.to_owned(), "command: field `gid` has the wrong type"),
            (r#"{"gid": 1e300, "nid": 1, "cmd": "ping"}"#.to_owned(), "command: field `gid` has the wrong type"),
            (r#"{"gid": 1, "nid": 18446744073709551616, "cmd": "ping"}"#.to_owned(), "command: field `nid` has the wrong type"),
            (r#"{"gid": 1, "nid": 1, "cmd": 5}"#.to_owned(), "command: field `cmd` has the wrong type"),
            (r#"{"gid": 1, "nid": 1, "cmd": "ping", "args": [1]}"#.to_owned(), "command: field `args` has the wrong type"),
            (
                json!({"gid": 1, "nid": 1, "cmd": "execute", "args": {"cmd": "x", "cron": "* *"}}).to_string(),
                "command: bad args for `execute`: args.cron",
            ),
            (
                json!({"gid": 1, "nid": 1, "cmd": "execute", "args": {"cmd": "x", "max_wait": u64::MAX}}).to_string(),
                "command: field `args.max_wait` has the wrong type",
            ),
            (
                json!({"gid": 1, "nid": 1, "cmd": "ping", "data": "x".repeat(MAX)}).to_string(),
                "the command takes",
            ),
        ];
        for (body, start) in cases {
            let message = refused(&body);
            assert!(message.starts_with(start), "{body:.80}: {message}");
        }
    }
}
