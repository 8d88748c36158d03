//! The `ERROR` answer of a command that will not run: refused at routing (it does not parse, a
//! bad argument such as a cron expression, no such agent, over `--max-command`) or
//! dead-lettered after Redis kept refusing its writes. It names the command's agent and `cmd`
//! as far as the command gives them, so whoever waits on the job sees whose answer it is. A
//! pure function.

use serde::Deserialize;
use serde_json::Value;

use schemas::{Command, JobResult};

use super::LETTER_RAW_MAX;

/// Longest `cmd` of a command that did not parse echoed in its answer; a longer one is left out.
const MAX_NAME: usize = 256;

/// The fields read from a command that did not parse, each only if it has its type.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Loose {
    gid: Value,
    nid: Value,
    cmd: Value,
    args: Value,
}

/// The `ERROR` result of command `id` (text `raw`) saying `reason`: its gid, nid, cmd and args
/// from `cmd` when it parsed, else read from `raw` as far as they are of their types (0, 0, ""
/// and no args when they are not, or `raw` is not a JSON object). Args whose text is over
/// [`LETTER_RAW_MAX`] are left out.
pub(super) fn error_result(id: &str, raw: &[u8], cmd: Option<&Command>, reason: &str) -> JobResult {
    let (gid, nid, name, args) = match cmd {
        Some(c) => (c.gid, c.nid.unwrap_or(0), c.cmd.clone(), c.args.clone()),
        None => loose(raw),
    };
    let args = match args.to_string().len() <= LETTER_RAW_MAX {
        true => args,
        false => Value::Null,
    };
    JobResult::error(id, gid, nid, &name, args, reason)
}

/// gid, nid, cmd and args of a command that did not parse. Only an object is read (serde would
/// take an array's items as the fields in order); its other fields are skipped, not built.
fn loose(raw: &[u8]) -> (u64, u64, String, Value) {
    let object = raw.trim_ascii_start().starts_with(b"{");
    let fields = match object {
        true => serde_json::from_slice::<Loose>(raw).unwrap_or_default(),
        false => Loose::default(),
    };
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    let name = match fields.cmd {
        Value::String(name) if name.len() <= MAX_NAME => name,
        _ => String::new(),
    };
    let args = match fields.args {
        args @ Value::Object(_) => args,
        _ => Value::Null,
    };
    (number(&fields.gid), number(&fields.nid), name, args)
}

#[cfg(test)]
mod tests;
