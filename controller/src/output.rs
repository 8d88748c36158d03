//! Live output intake (DESIGN §11): `POST /v1/agents/<gid>/<nid>/output` takes a JSON array of
//! output batches (the lines one job printed, in order) and appends each line to the stream
//! `output:<id>` with its `agent`, `fd`, `level`, `line` and `time`.
//!
//! Each batch is appended once: its `seq` increases with every batch the agent forwards, and
//! `{output:<id>}:seq` keeps the last one appended per agent (`lua/append_output.lua`, one
//! script per batch, in the stream's slot), so a batch posted again after a lost answer adds
//! nothing. Batches of one job are appended in order; jobs concurrently.
//!
//! Bounds: a job's stream keeps at most `--output-maxlen` lines and `--output-maxbytes` bytes of
//! lines (all its agents together); the first line over either cap ends the stream with one
//! marker line (level [`schemas::output::MARKER_LEVEL`]), later lines are only counted in the
//! answer's `capped`, and the answer's `stop` tells the agent to send no more for the job (the
//! agent's result still carries the last lines of each stream). A post holds at most
//! [`MAX_BATCHES`] batches, a batch at most [`MAX_LINES`] lines of at most [`MAX_LINE`] bytes
//! (longer lines are cut and marked). Only a target of the job may write to its stream, and an
//! agent to the stream of its own config-file job ([`crate::config_jobs`]) before that job's
//! first result opens its record.
//!
//! Lifetimes: the stream and its marks expire `--result-ttl` after the last line; every post
//! also renews the job record's TTL, so a job that runs (and prints) longer than the TTL keeps
//! its record, and its final result renews it once more.

use std::collections::BTreeMap;

use serde_json::Value;

use schemas::{OutputAnswer, OutputBatch};

use crate::intake::{self, Invalid, Shape};
use crate::keys;
use crate::state::Shared;

/// Most lines in one batch (the agent sends at most about 1000).
pub const MAX_LINES: usize = 5000;
/// Most batches in one post (the agent posts at most a few hundred).
pub const MAX_BATCHES: usize = 1000;
/// Longest line kept whole, in bytes, its mark included; a longer one is cut at a character
/// boundary and marked (the agent cuts to fit already).
pub use schemas::output::MAX_LINE;
/// What a line cut at [`MAX_LINE`] ends with.
pub const CUT_MARK: &str = " [cut]";

/// Parses and checks an output post (all that happens before Redis; a pure function: fuzzed):
/// the valid batches, each line within [`MAX_LINE`], and the answer so far (the refused ones).
pub fn parse_batch(body: &[u8]) -> Result<(Vec<OutputBatch>, OutputAnswer), Invalid> {
    let expected = "an output batch object or an array of them";
    let posted = intake::batch(body, Shape::ObjectOrArray, expected, check)?;
    let items = posted.valid.len() + posted.refused.len();
    if items > MAX_BATCHES {
        return Err(Invalid::bad_request(format!(
            "{items} output batches in one post (at most {MAX_BATCHES})"
        )));
    }
    let mut answer = OutputAnswer::default();
    for r in posted.refused {
        answer.rejected.push(schemas::Rejected {
            id: r.id,
            error: r.why.code.to_owned(),
            message: r.why.message,
        });
    }
    Ok((posted.valid, answer))
}

fn check(item: Value) -> Result<OutputBatch, Invalid> {
    let mut batch: OutputBatch = serde_json::from_value(item)
        .map_err(|e| Invalid::bad_request(format!("output batch: {e}")))?;
    if !schemas::command::valid_id(&batch.id) || schemas::command::has_hash_tag_char(&batch.id) {
        return Err(Invalid::bad_request(format!(
            "output batch: `{}` is not a job id with live output (1 to {} characters, no \
             commas, whitespace, control characters, `{{` or `}}`)",
            batch.id.chars().take(64).collect::<String>(),
            schemas::command::MAX_ID_LEN
        )));
    }
    if batch.lines.len() > MAX_LINES {
        return Err(Invalid::bad_request(format!(
            "output batch: {} lines (at most {MAX_LINES} per batch)",
            batch.lines.len()
        )));
    }
    if let Some(l) = batch.lines.iter().find(|l| !matches!(l.fd, 1 | 2)) {
        return Err(Invalid::bad_request(format!(
            "output batch: fd must be 1 or 2, not {}",
            l.fd
        )));
    }
    for line in &mut batch.lines {
        cut(&mut line.line);
    }
    Ok(batch)
}

/// Cuts `line` to [`MAX_LINE`] bytes at a character boundary, marked; whether it was.
pub fn cut(line: &mut String) -> bool {
    if line.len() <= MAX_LINE {
        return false;
    }
    let mut at = MAX_LINE - CUT_MARK.len();
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    line.truncate(at);
    line.push_str(CUT_MARK);
    true
}

/// Appends the batches `agent` posted; `answer` already holds the refused ones.
pub async fn append(
    state: &Shared,
    agent: &str,
    batches: Vec<OutputBatch>,
    answer: &mut OutputAnswer,
) -> redis::RedisResult<()> {
    let mut jobs: BTreeMap<String, Vec<OutputBatch>> = BTreeMap::new();
    for b in batches {
        jobs.entry(b.id.clone()).or_default().push(b);
    }
    // Only a target of a job may write its output; a job still printing keeps its record.
    let mut pipe = redis::pipe();
    for id in jobs.keys() {
        pipe.hget(keys::job(id), "targets")
            .expire(keys::job(id), state.config.result_ttl.as_secs() as i64)
            .ignore();
    }
    let targets: Vec<Option<String>> = match jobs.is_empty() {
        true => Vec::new(),
        false => pipe.query_async(&mut state.conn()).await?,
    };
    let mut allowed = Vec::new();
    for ((id, batches), targets) in jobs.into_iter().zip(targets) {
        let is_target = targets
            .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
            .map(|t| t.iter().any(|a| a == agent));
        // An agent's own config job may print before its first result opens its record (one
        // of its at most MAX_DECLARED config jobs).
        let own_config_job = is_target.is_none()
            && crate::config_jobs::owner(&id).as_deref() == Some(agent)
            && crate::config_jobs::admitted(state, agent, &id).await?;
        match is_target {
            Some(true) => allowed.push((id, batches)),
            None if own_config_job => allowed.push((id, batches)),
            Some(false) => {
                answer.rejected.push(schemas::Rejected {
                    id: id.clone(),
                    error: "unknown_job".into(),
                    message: format!("job `{id}` was not sent to agent {agent}"),
                });
                answer.stop.push(id);
            }
            None => {
                answer.rejected.push(schemas::Rejected {
                    id: id.clone(),
                    error: "unknown_job".into(),
                    message: format!("no job `{id}` (never routed, or its record expired)"),
                });
                answer.stop.push(id);
            }
        }
    }
    let conn = state.durable().await?;
    let appended = futures::future::try_join_all(allowed.iter().map(|(id, batches)| {
        let mut conn = conn.clone();
        async move {
            let mut all = Appended::default();
            for b in batches {
                all.add(append_one(state, &mut conn, agent, id, b).await?);
            }
            Ok::<_, redis::RedisError>((id, all))
        }
    }))
    .await?;
    for (id, a) in appended {
        answer.appended += a.lines;
        answer.capped += a.capped;
        answer.duplicates += a.duplicates;
        if a.stop {
            answer.stop.push(id.clone());
        }
    }
    let written: Vec<String> = allowed.iter().map(|(id, _)| keys::output(id)).collect();
    if !written.is_empty() {
        state.confirm(&mut conn.clone(), &written).await?;
    }
    Ok(())
}

/// What became of the batches of one job.
#[derive(Debug, Default, Clone, Copy)]
struct Appended {
    lines: usize,
    capped: usize,
    duplicates: usize,
    /// The stream takes no more lines.
    stop: bool,
}

impl Appended {
    fn add(&mut self, (lines, capped, duplicate, stop): (usize, usize, usize, usize)) {
        self.lines += lines;
        self.capped += capped;
        self.duplicates += duplicate;
        self.stop |= stop == 1;
    }
}

/// Appends one batch (`append_output.lua`): {lines appended, capped, duplicate, stop}.
async fn append_one(
    state: &Shared,
    conn: &mut crate::redis_conn::Conn,
    agent: &str,
    id: &str,
    batch: &OutputBatch,
) -> redis::RedisResult<(usize, usize, usize, usize)> {
    let (lines, bytes) = (state.config.output_maxlen, state.config.output_maxbytes);
    let marker = format!(
        "[jsacc] output capped at {lines} lines or {bytes} bytes (--output-maxlen, \
         --output-maxbytes): later lines are not kept; each agent's result has the last lines \
         of stdout and stderr"
    );
    let mut invocation = state.scripts.append_output.prepare_invoke();
    invocation
        .key(keys::output(id))
        .key(keys::output_marks(id))
        .arg(agent)
        .arg(batch.seq)
        .arg(lines)
        .arg(bytes)
        .arg(state.config.result_ttl.as_secs())
        .arg(schemas::now_ms())
        .arg(marker);
    for l in &batch.lines {
        invocation.arg(l.fd).arg(l.level).arg(&l.line).arg(l.time);
    }
    invocation.invoke_async(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(id: &str, seq: u64, lines: usize) -> Value {
        let lines: Vec<Value> = (0..lines)
            .map(|i| json!({"fd": 1, "level": 1, "line": format!("line {i}"), "time": 1}))
            .collect();
        json!({"id": id, "seq": seq, "lines": lines})
    }

    #[test]
    fn bad_batches_are_refused_each_with_its_reason() {
        let mut bad_fd = batch("j", 2, 1);
        bad_fd["lines"][0]["fd"] = json!(3);
        let body = json!([
            batch("j", 1, 2),
            bad_fd,
            batch("a{b}", 3, 1),
            batch("k", 4, MAX_LINES + 1),
            {"id": "x"}
        ])
        .to_string();
        let (valid, answer) = parse_batch(body.as_bytes()).expect("an array");
        assert_eq!(valid.len(), 1);
        let why: Vec<&str> = answer.rejected.iter().map(|r| r.message.as_str()).collect();
        assert!(why[0].contains("fd must be 1 or 2"), "{why:?}");
        assert!(why[1].contains("not a job id"), "{why:?}");
        assert!(why[2].contains("at most 5000"), "{why:?}");
        assert_eq!(answer.rejected[3].id, "x");
    }

    #[test]
    fn long_lines_are_cut_at_a_character_boundary_and_marked() {
        let mut line = "é".repeat(MAX_LINE);
        assert!(cut(&mut line));
        assert!(line.len() <= MAX_LINE && line.ends_with(CUT_MARK));
        let mut short = "short".to_owned();
        assert!(!cut(&mut short));
    }
}
