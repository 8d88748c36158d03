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
//! Redis memory is bounded per stream: at most `log_maxlen` messages of at most
//! `--log-max-message` bytes of `data` each (a longer one is cut and marked, never refused: the
//! rest of a runaway line is worth less than the line), and a stream, its mark and `alerts`
//! expire `--log-ttl` after their last append, so a job that stopped logging leaves nothing
//! behind for ever.
//!
//! Streams are appended concurrently (the multiplexed connection pipelines the scripts); the
//! chunks of one stream in order, which the high-water mark needs.

use std::collections::BTreeMap;

use schemas::{LogMessage, LogsAnswer};

use crate::intake::{self, Invalid, Shape};
use crate::keys;
use crate::redis_conn::Conn;
use crate::state::Shared;

/// Lowest level copied to `alerts`.
pub const ALERT_LEVEL: u8 = 8;
/// Messages per script call.
const CHUNK: usize = 500;
/// Smallest `--log-max-message`: room for the cut mark and some text.
pub use crate::config::MIN_LOG_MESSAGE as MIN_MESSAGE;
/// Longest `domain` or `name` of a message: they name its stream, a Redis key.
pub const MAX_NAME: usize = 1024;

/// Parses a logs post (all that happens before Redis; a pure function: fuzzed): the messages
/// in order, and the answer so far (the items that are not messages, counted as rejected with
/// the first reason). A body that is not a JSON array is an error.
pub fn parse_batch(body: &[u8]) -> Result<(Vec<LogMessage>, LogsAnswer), Invalid> {
    let expected = "an array of log messages (or of arrays of them)";
    let posted = intake::batch(body, Shape::NestedArray, expected, |item| {
        let m = serde_json::from_value::<LogMessage>(item)
            .map_err(|e| Invalid::bad_request(format!("log message: {e}")))?;
        match refusal(&m) {
            None => Ok(m),
            Some(why) => Err(Invalid::bad_request(why)),
        }
    })?;
    let answer = LogsAnswer {
        rejected: posted.refused.len(),
        reason: posted.refused.into_iter().next().map(|r| r.why.message),
        ..LogsAnswer::default()
    };
    Ok((posted.valid, answer))
}

/// Why a parsed message cannot be appended: its domain and name make its stream's key.
fn refusal(m: &LogMessage) -> Option<&'static str> {
    if braced(m) {
        return Some(
            "log message: domain and name must not contain `{` or `}` (Redis Cluster hash tags)",
        );
    }
    if m.domain.len() > MAX_NAME || m.name.len() > MAX_NAME {
        return Some("log message: domain and name must be at most 1024 bytes each");
    }
    None
}

/// Cuts the `data` of every message over `max` bytes (see [`cut`]); returns how many were.
pub fn cut_all(messages: &mut [LogMessage], max: usize) -> usize {
    let mut n = 0;
    for m in messages {
        n += usize::from(cut(&mut m.data, max));
    }
    n
}

/// Cuts `data` to at most `max` bytes (but never below the mark) at a UTF-8 boundary and marks
/// the cut: `… [cut: N bytes]`, N the bytes left out. Returns whether it cut.
pub fn cut(data: &mut String, max: usize) -> bool {
    if data.len() <= max {
        return false;
    }
    let mark = |n: usize| format!("… [cut: {n} bytes]");
    // The mark of the longest possible cut is at least as long as the mark written.
    let mut keep = max.saturating_sub(mark(data.len()).len());
    while !data.is_char_boundary(keep) {
        keep -= 1;
    }
    let left_out = data.len() - keep;
    data.truncate(keep);
    data.push_str(&mark(left_out));
    true
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
            .arg(to.nid)
            .arg(state.config.log_ttl.as_secs());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn message(id: u64, data: &str) -> Value {
        serde_json::json!({"id": id, "jobid": "j", "domain": "ops", "name": "x", "epoch": 1,
            "level": 1, "data": data})
    }

    #[test]
    fn a_short_message_is_not_cut() {
        let mut data = "hello".to_owned();
        assert!(!cut(&mut data, MIN_MESSAGE));
        assert_eq!(data, "hello");
        let mut exact = "x".repeat(100);
        assert!(!cut(&mut exact, 100));
    }

    #[test]
    fn a_long_message_is_cut_to_its_bound_and_marked() {
        let mut data = "x".repeat(1 << 20);
        assert!(cut(&mut data, 64 << 10));
        assert!(data.len() <= 64 << 10, "{}", data.len());
        let kept = data.find('…').expect("the mark");
        assert!(data[..kept].bytes().all(|b| b == b'x'));
        let left_out = (1 << 20) - kept;
        assert_eq!(&data[kept..], format!("… [cut: {left_out} bytes]"));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        for max in MIN_MESSAGE..MIN_MESSAGE + 8 {
            let mut data = "é€😀".repeat(100);
            assert!(cut(&mut data, max));
            assert!(data.len() <= max, "{max}: {}", data.len());
            assert!(data.contains("… [cut: "), "{data}");
        }
    }

    #[test]
    fn a_batch_parses_nested_arrays_and_counts_what_is_not_a_message() {
        let body = serde_json::json!([[message(1, "a"), message(2, "b")], message(3, "c"), 42,
            {"id": 4}]);
        let (messages, answer) = parse_batch(body.to_string().as_bytes()).expect("parses");
        let ids: Vec<u64> = messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(answer.rejected, 2);
        assert!(answer.reason.is_some_and(|r| r.starts_with("log message:")));
    }

    #[test]
    fn a_domain_too_long_for_a_key_is_rejected_alone() {
        let mut long = message(2, "b");
        long["domain"] = Value::String("d".repeat(MAX_NAME + 1));
        let mut braced = message(3, "c");
        braced["name"] = Value::String("a{b}".into());
        let body = serde_json::json!([message(1, "a"), long, braced]);
        let (messages, answer) = parse_batch(body.to_string().as_bytes()).expect("parses");
        assert_eq!(messages.len(), 1);
        assert_eq!(answer.rejected, 2);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for body in [&b"not json"[..], b"{}", b"42", b"", b"[", b"\xff\xfe"] {
            assert!(parse_batch(body).is_err(), "{body:?}");
        }
        let (messages, answer) = parse_batch(b"[]").expect("empty array");
        assert!(messages.is_empty() && answer == LogsAnswer::default());
    }

    #[test]
    fn the_answer_shows_cut_only_when_something_was() {
        let plain = serde_json::to_value(LogsAnswer::default()).expect("serializes");
        assert!(plain.get("cut").is_none(), "{plain}");
        let cut = serde_json::to_value(LogsAnswer {
            cut: 2,
            ..LogsAnswer::default()
        })
        .expect("serializes");
        assert_eq!(cut["cut"], 2);
    }
}
