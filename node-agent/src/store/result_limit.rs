//! The size limit of a result (issue 10, item 2): every result is encoded in at most
//! [`RESULT_LIMIT`] bytes of JSON before it enters the outbox, so none can be too large for the
//! controller (`--max-body`, 16 MiB by default), be refused with 413 and leave its job `RUNNING`.
//!
//! A result over the limit is shortened, keeping the contract's field types (DESIGN §3), and
//! every cut is marked:
//! - `streams`: the newest lines are kept, after a first line `… N bytes cut (result limit 1 MiB)`;
//!   a newest line that alone is too long keeps its beginning and ends in ` … [N bytes cut]`.
//! - strings (a process's `data`, `critical`, strings inside `data` or `args`) keep their
//!   beginning and end in `… N bytes cut (result limit 1 MiB)`.
//! - arrays (the messages of `get_msgs`) keep their last, newest, items; a line at the end of
//!   `streams[1]` says that earlier ones were left out.
//! - objects keep every member, each shortened by the same rules.
//!
//! The room is shared fairly: fields smaller than their share are kept whole, the large ones
//! split what is left. The pure functions here take the limit as a parameter so tests can use
//! small ones.

use std::collections::VecDeque;
use std::io;

use schemas::JobResult;
use serde::Serialize;
use serde_json::{Map, Value};

/// Most bytes of a result's JSON.
pub(crate) const RESULT_LIMIT: usize = 1 << 20;

/// Kept free for the notes added to `streams[1]` and for estimates that come out a little short.
const NOTE_ROOM: usize = 512;
/// Shortening passes before the last resort (each pass aims lower by what the previous missed).
const PASSES: usize = 4;

/// The JSON of `result`, shortened to at most [`RESULT_LIMIT`] bytes.
pub(crate) fn encode(result: &JobResult) -> Result<String, serde_json::Error> {
    encode_within(result, RESULT_LIMIT)
}

/// The JSON of `result` in at most `limit` bytes: as it is when it fits, else shortened. Only a
/// result whose `id` and `cmd` alone do not fit can come out larger.
pub(crate) fn encode_within(result: &JobResult, limit: usize) -> Result<String, serde_json::Error> {
    let size = json_size(result)?;
    if size <= limit {
        return serde_json::to_string(result);
    }
    let label = Label(limit);
    let mut room = limit;
    for _ in 0..PASSES {
        let text = serde_json::to_string(&shorten(result, room, label)?)?;
        if text.len() <= limit {
            tracing::debug!(id = %result.id, bytes = size, kept = text.len(), "result shortened to the limit");
            return Ok(text);
        }
        room = room.saturating_sub(text.len() - limit + NOTE_ROOM);
    }
    let text = serde_json::to_string(&bare(result, label))?;
    tracing::warn!(id = %result.id, bytes = size, kept = text.len(), "result cut to its bare fields to fit the limit");
    Ok(text)
}

/// The limit, as the markers name it: `result limit 1 MiB`.
#[derive(Debug, Clone, Copy)]
struct Label(usize);

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: usize = 1 << 20;
        // MIB is a power of two: no bit below it set means a whole number of MiB.
        if self.0 >= MIB && self.0 & (MIB - 1) == 0 {
            write!(f, "result limit {} MiB", self.0 / MIB)
        } else {
            write!(f, "result limit {} bytes", self.0)
        }
    }
}

/// `result` with its large fields shortened so its JSON takes about `room` bytes.
fn shorten(result: &JobResult, room: usize, label: Label) -> Result<JobResult, serde_json::Error> {
    let mut short = skeleton(result, label);
    let budget = room.saturating_sub(json_size(&short)? + NOTE_ROOM);
    // The fields that can be large, in this order: the streams, data, critical, args.
    let mut sizes: Vec<usize> = result.streams.iter().map(|s| str_size(s)).collect();
    sizes.push(json_size(&result.data)?);
    sizes.push(str_size(&result.critical));
    sizes.push(json_size(&result.args)?);
    let rooms = share(&sizes, budget);
    let n = result.streams.len();
    let mut notes = Vec::new();
    for (i, stream) in result.streams.iter().enumerate() {
        short.streams[i] = cut_tail(stream, rooms[i], label);
    }
    short.data = cut_value(&result.data, rooms[n], label, "data", &mut notes)?;
    short.critical = cut_head(&result.critical, rooms[n + 1], label);
    short.args = cut_value(&result.args, rooms[n + 2], label, "args", &mut notes)?;
    if !notes.is_empty() {
        if short.streams.is_empty() {
            short.streams.push(String::new());
        }
        if let Some(last) = short.streams.last_mut() {
            if !last.is_empty() && !last.ends_with('\n') {
                last.push('\n');
            }
            last.push_str(&notes.join("\n"));
        }
    }
    Ok(short)
}

/// The last resort: every large field replaced by a marker of what it held.
fn bare(result: &JobResult, label: Label) -> JobResult {
    let marker = |bytes: usize| match bytes {
        0 => String::new(),
        n => cut_marker(n, label),
    };
    let mut short = skeleton(result, label);
    short.streams = result.streams.iter().map(|s| marker(s.len())).collect();
    short.data = Value::String(marker(json_size(&result.data).unwrap_or(0)));
    short.critical = marker(result.critical.len());
    if !result.args.is_null() {
        short.args = Value::Object(Map::new());
    }
    short
}

/// A copy of `result` with its large fields empty (and `cmd`, a client's text, at most 200 bytes).
fn skeleton(result: &JobResult, label: Label) -> JobResult {
    JobResult {
        id: result.id.clone(),
        gid: result.gid,
        nid: result.nid,
        cmd: cut_head(&result.cmd, 200, label),
        args: Value::Null,
        data: Value::String(String::new()),
        level: result.level,
        state: result.state,
        time: result.time,
        starttime: result.starttime,
        exit_code: result.exit_code,
        streams: vec![String::new(); result.streams.len()],
        critical: String::new(),
        run: result.run,
        is_final: result.is_final,
        skipped: result.skipped,
    }
}

/// Splits `budget` among fields of the given sizes: each gets at most its size, and those
/// that need more share equally what the smaller ones leave.
fn share(sizes: &[usize], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| sizes[i]);
    let mut rooms = vec![0; sizes.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (sizes.len() - k);
        rooms[i] = sizes[i].min(fair);
        left -= rooms[i];
    }
    rooms
}

/// `… N bytes cut (result limit 1 MiB)`.
fn cut_marker(bytes: usize, label: Label) -> String {
    format!("… {bytes} bytes cut ({label})")
}

/// A stream's tail in at most `room` bytes of JSON: its newest lines after a first line saying
/// how many bytes before them were cut.
fn cut_tail(text: &str, room: usize, label: Label) -> String {
    if str_size(text) <= room {
        return text.to_owned();
    }
    // The header's size with the largest count it can hold, and its escaped newline.
    let header_room = escaped_len(&cut_marker(text.len(), label)) + 2;
    let mut left = room.saturating_sub(2 + header_room);
    let (body, newline) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (text, ""),
    };
    left = left.saturating_sub(escaped_len(newline));
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut kept_bytes = 0;
    for line in body.rsplit('\n') {
        let cost = escaped_len(line) + if kept.is_empty() { 0 } else { 2 };
        if cost <= left {
            left -= cost;
            kept_bytes += line.len() + usize::from(!kept.is_empty());
            kept.push_front(line.to_owned());
            continue;
        }
        if kept.is_empty() {
            // The newest line alone is too long: its beginning, marked.
            let (head, cut) = head_within(
                line,
                left.saturating_sub(escaped_len(&line_marker(line.len()))),
            );
            if !head.is_empty() {
                kept_bytes += head.len();
                kept.push_front(format!("{head}{}", line_marker(cut)));
            }
        }
        break;
    }
    let cut = text.len() - newline.len() - kept_bytes;
    let mut short = cut_marker(cut, label);
    for line in kept {
        short.push('\n');
        short.push_str(&line);
    }
    short.push_str(newline);
    short
}

/// ` … [N bytes cut]`, the end of a line cut short.
fn line_marker(bytes: usize) -> String {
    format!(" … [{bytes} bytes cut]")
}

/// A string in at most `room` bytes of JSON: its beginning, then a marker of what was cut.
fn cut_head(text: &str, room: usize, label: Label) -> String {
    if str_size(text) <= room {
        return text.to_owned();
    }
    let marker_room = escaped_len(&cut_marker(text.len(), label));
    let Some(left) = room.checked_sub(2 + marker_room) else {
        return String::new();
    };
    let (head, cut) = head_within(text, left);
    format!("{head}{}", cut_marker(cut, label))
}

/// The longest beginning of `text` whose escaped form fits `room` bytes, and how many bytes
/// were left out.
fn head_within(text: &str, room: usize) -> (&str, usize) {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        used += escaped_char_len(c);
        if used > room {
            return (&text[..i], text.len() - i);
        }
    }
    (text, 0)
}

/// A JSON value in at most `room` bytes (best effort): strings keep their beginning, arrays
/// their last items, objects every member each shortened to its share. `path` names the value
/// in the notes of what was left out.
fn cut_value(
    value: &Value,
    room: usize,
    label: Label,
    path: &str,
    notes: &mut Vec<String>,
) -> Result<Value, serde_json::Error> {
    if json_size(value)? <= room {
        return Ok(value.clone());
    }
    Ok(match value {
        Value::String(s) => Value::String(cut_head(s, room, label)),
        Value::Array(items) => cut_array(items, room, label, path, notes)?,
        Value::Object(members) => cut_object(members, room, label, path, notes)?,
        // Numbers, booleans and null are a few bytes.
        other => other.clone(),
    })
}

/// The last items of an array that fit; the newest alone shortened if even it does not.
fn cut_array(
    items: &[Value],
    room: usize,
    label: Label,
    path: &str,
    notes: &mut Vec<String>,
) -> Result<Value, serde_json::Error> {
    let mut left = room.saturating_sub(2);
    let mut kept = VecDeque::new();
    for item in items.iter().rev() {
        let cost = json_size(item)? + usize::from(!kept.is_empty());
        if cost > left {
            if kept.is_empty() {
                kept.push_front(cut_value(item, left, label, &format!("{path}[-1]"), notes)?);
            }
            break;
        }
        left -= cost;
        kept.push_front(item.clone());
    }
    let dropped = items.len() - kept.len();
    if dropped > 0 {
        notes.push(format!(
            "… {path}: the first {dropped} of {} items were left out, the last {} kept ({label})",
            items.len(),
            kept.len()
        ));
    }
    Ok(Value::Array(kept.into()))
}

/// Every member, each shortened to its share of the room; a marker member when even the keys
/// do not fit.
fn cut_object(
    members: &Map<String, Value>,
    room: usize,
    label: Label,
    path: &str,
    notes: &mut Vec<String>,
) -> Result<Value, serde_json::Error> {
    // Braces, and per member its key, colon and comma.
    let frame: usize = 2 + members.keys().map(|k| str_size(k) + 2).sum::<usize>();
    if frame + 4 * members.len() > room {
        let mut marker = Map::new();
        let bytes = json_size(members)?;
        marker.insert("cut".into(), Value::String(cut_marker(bytes, label)));
        return Ok(Value::Object(marker));
    }
    let sizes = members
        .values()
        .map(json_size)
        .collect::<Result<Vec<_>, _>>()?;
    let rooms = share(&sizes, room - frame);
    let mut short = Map::new();
    for ((key, value), room) in members.iter().zip(rooms) {
        let value = cut_value(value, room, label, &format!("{path}.{key}"), notes)?;
        short.insert(key.clone(), value);
    }
    Ok(Value::Object(short))
}

/// Counts the bytes written to it.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes of `value`'s JSON, without building it.
fn json_size<T: Serialize + ?Sized>(value: &T) -> Result<usize, serde_json::Error> {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value)?;
    Ok(counter.0)
}

/// Bytes of a string's JSON, quotes included.
fn str_size(s: &str) -> usize {
    2 + escaped_len(s)
}

/// Bytes of a string's JSON without its quotes (serde_json's escapes).
fn escaped_len(s: &str) -> usize {
    s.bytes().map(escaped_byte_len).sum()
}

fn escaped_char_len(c: char) -> usize {
    if c.is_ascii() {
        escaped_byte_len(c as u8)
    } else {
        c.len_utf8()
    }
}

fn escaped_byte_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0..=0x1f => 6,
        _ => 1,
    }
}

#[cfg(test)]
mod tests;
