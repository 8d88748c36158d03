//! What a job record keeps of its command (`job:<id>` field `cmd`). A command's `data` can be
//! megabytes (a `put_file` chunk, a big stdin): kept whole, every chunk of a 100 MB upload
//! would sit in Redis for `--result-ttl`. Above [`KEEP_WHOLE`] bytes the record keeps the
//! command without its `data`, the byte count in `data_omitted`, and the SHA-256 of the whole
//! text in `digest`, by which a replay or a client's retry is still told from another command
//! with the same id. A rollout keeps its command whole: its later batches are pushed from the
//! record.

use serde_json::Value;
use sha2::{Digest, Sha256};

use schemas::Command;

/// Largest command text a job record keeps whole.
pub const KEEP_WHOLE: usize = 64 * 1024;

/// The record's form of a command.
#[derive(Debug, PartialEq)]
pub struct Kept {
    /// The `cmd` field: the raw text, or the command without `data`.
    pub text: Vec<u8>,
    /// SHA-256 (hex) of the raw text when `text` is not the raw text.
    pub digest: Option<String>,
    /// Bytes of `data` left out.
    pub omitted: Option<usize>,
}

/// How the record keeps `raw` (which parsed as `cmd`). `cmd` comes back as it was: its `data`
/// is only lent out while the rest is written, rather than copied with it.
pub fn kept(raw: &[u8], cmd: &mut Command, rollout: bool) -> Kept {
    let whole = || Kept {
        text: raw.to_vec(),
        digest: None,
        omitted: None,
    };
    if raw.len() <= KEEP_WHOLE || rollout {
        return whole();
    }
    let Some(data) = cmd.data.take() else {
        return whole();
    };
    let omitted = match &data {
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    };
    let slim = serde_json::to_vec(cmd);
    cmd.data = Some(data);
    let Ok(text) = slim else {
        return whole();
    };
    Kept {
        text,
        digest: Some(digest(raw)),
        omitted: Some(omitted),
    }
}

/// Whether a record's `cmd` and `digest` fields are of the command `raw`.
pub fn same(raw: &[u8], recorded: Option<&[u8]>, recorded_digest: Option<&str>) -> bool {
    match recorded_digest {
        Some(d) => d == digest(raw),
        None => recorded == Some(raw),
    }
}

fn digest(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command(data: &str) -> (Vec<u8>, Command) {
        let raw = json!({"id": "j", "gid": 1, "nid": 2, "cmd": "put_file",
            "args": {"path": "/tmp/x"}, "data": data})
        .to_string()
        .into_bytes();
        let cmd: Command = serde_json::from_slice(&raw).unwrap();
        (raw, cmd)
    }

    #[test]
    fn a_small_command_is_kept_whole() {
        let (raw, mut cmd) = command("hello");
        let k = kept(&raw, &mut cmd, false);
        assert_eq!(k.text, raw);
        assert_eq!((k.digest, k.omitted), (None, None));
        assert!(same(&raw, Some(&raw), None));
    }

    #[test]
    fn a_big_commands_data_is_left_out_and_its_digest_kept() {
        let (raw, mut cmd) = command(&"A".repeat(200_000));
        let k = kept(&raw, &mut cmd, false);
        assert!(k.text.len() < 200, "{}", k.text.len());
        let slim: Value = serde_json::from_slice(&k.text).unwrap();
        assert_eq!(slim["args"]["path"], "/tmp/x");
        assert!(slim.get("data").is_none());
        assert_eq!(k.omitted, Some(200_000));
        assert_eq!(
            cmd.data.as_ref().and_then(Value::as_str).map(str::len),
            Some(200_000)
        );
        let d = k.digest.unwrap();
        assert!(same(&raw, Some(&k.text), Some(&d)));
        let (other, _) = command(&"B".repeat(200_000));
        assert!(
            !same(&other, Some(&k.text), Some(&d)),
            "another chunk with the same id"
        );
    }

    #[test]
    fn a_rollout_keeps_its_command_whole() {
        let (raw, mut cmd) = command(&"A".repeat(200_000));
        assert_eq!(kept(&raw, &mut cmd, true).text, raw);
    }
}
