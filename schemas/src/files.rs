//! `args` of the file transfer commands (DESIGN §11): `put_file` writes a file on the agent's
//! machine in chunks, `get_file` reads one in chunks. A file travels as one command per chunk,
//! because a command is at most the controller's `--max-command` (8 MiB) and a result at most
//! the agent's result limit (1 MiB).
//!
//! `put_file`: args `{path, mode?, size, sha256, offset, upload}` and the chunk, base64, in the
//! command's `data`. `size` and `sha256` describe the whole file; `upload` (chosen by the
//! client) names the transfer, so its chunks meet in one temporary file. The answer's `data` is
//! `{"path", "upload", "received", "size", "complete"}` (with `sha256` and `mode` when complete).
//!
//! `get_file`: args `{path, offset?, length?}`; the answer's `data` is `{"path", "size",
//! "mode", "offset", "data" (base64), "eof"}`, with `sha256` of the whole file in the chunk
//! that reaches its end (`eof`).
//!
//! Paths may use `$agentroot`, `$root` and `$tmp` like `execute`'s; the agent templates them
//! and wants an absolute path.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize};

/// Longest `path`, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest `upload` id.
pub const MAX_UPLOAD_ID_LEN: usize = 64;
/// Most bytes one `get_file` answers (and its default `length`): 704 KiB, whose base64
/// (939 KiB) leaves room for the rest of the result within the agent's 1 MiB result limit.
pub const MAX_GET_LENGTH: u64 = 704 * 1024;
/// Highest file mode: permission bits with setuid, setgid and sticky.
pub const MAX_MODE: u32 = 0o7777;

/// `args` of `put_file`: one chunk of an upload (its bytes, base64, in the command's `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutFileArgs {
    /// Where the file goes on the agent's machine (templated, then absolute).
    pub path: String,
    /// Permission bits set when the file is complete (Unix only); absent: 0644 for a new
    /// file, the old file's mode when it replaces one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// Bytes of the whole file.
    pub size: u64,
    /// SHA-256 of the whole file, 64 hex digits.
    pub sha256: String,
    /// Where this chunk starts in the file.
    #[serde(default)]
    pub offset: u64,
    /// The client's name for this upload: `[A-Za-z0-9_-]{1,64}`.
    pub upload: String,
    #[serde(default)]
    pub max_wait: u64,
}

/// `args` of `get_file`: one chunk of a download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetFileArgs {
    pub path: String,
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to answer, 1 to [`MAX_GET_LENGTH`] (its default).
    #[serde(default = "max_get_length")]
    pub length: u64,
    #[serde(default)]
    pub max_wait: u64,
}

fn max_get_length() -> u64 {
    MAX_GET_LENGTH
}

impl PutFileArgs {
    /// Rules serde cannot say; the text names the field.
    pub fn check(&self) -> Result<(), String> {
        check_path(&self.path)?;
        let hex = |c: char| c.is_ascii_hexdigit();
        if self.sha256.len() != 64 || !self.sha256.chars().all(hex) {
            return Err("`sha256` must be 64 hex digits (SHA-256 of the whole file)".into());
        }
        let id_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if self.upload.is_empty()
            || self.upload.len() > MAX_UPLOAD_ID_LEN
            || !self.upload.chars().all(id_char)
        {
            return Err(format!(
                "`upload` must be 1 to {MAX_UPLOAD_ID_LEN} characters of A-Z a-z 0-9 _ -"
            ));
        }
        if self.offset > self.size {
            return Err(format!(
                "`offset` {} is past the end of the file (`size` {})",
                self.offset, self.size
            ));
        }
        Ok(())
    }
}

impl GetFileArgs {
    /// Rules serde cannot say; the text names the field.
    pub fn check(&self) -> Result<(), String> {
        check_path(&self.path)?;
        if self.length == 0 || self.length > MAX_GET_LENGTH {
            return Err(format!(
                "`length` must be 1 to {MAX_GET_LENGTH} bytes (what one answer can carry)"
            ));
        }
        Ok(())
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("`path` is empty".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("`path` is longer than {MAX_PATH_LEN} bytes"));
    }
    if path.contains('\0') {
        return Err("`path` contains a NUL character".into());
    }
    Ok(())
}

/// File permission bits. On the wire: an octal string (`"0644"`, `"644"`, `"0o644"`) or an
/// integer holding the value (`420` is 0644); written back as a 4-digit octal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct FileMode(pub u32);

impl From<FileMode> for String {
    fn from(mode: FileMode) -> String {
        mode.to_string()
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl FileMode {
    /// Parses an octal mode string: `0644`, `644`, `0o644`, `4755`.
    pub fn parse(text: &str) -> Result<FileMode, String> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let bad = || format!("`{text}` is not an octal mode like \"0644\" (at most 7777)");
        if digits.is_empty()
            || digits.len() > 5
            || !digits.chars().all(|c| ('0'..='7').contains(&c))
        {
            return Err(bad());
        }
        let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
        FileMode::from_value(u64::from(mode)).map_err(|_| bad())
    }

    fn from_value(value: u64) -> Result<FileMode, String> {
        u32::try_from(value)
            .ok()
            .filter(|m| *m <= MAX_MODE)
            .map(FileMode)
            .ok_or_else(|| format!("{value} is over the highest mode 0o7777 (4095)"))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FileMode, D::Error> {
        deserializer.deserialize_any(ModeVisitor)
    }
}

struct ModeVisitor;

impl de::Visitor<'_> for ModeVisitor {
    type Value = FileMode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an octal mode string like \"0644\" or an integer from 0 to 4095 (0o7777)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<FileMode, E> {
        FileMode::from_value(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<FileMode, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
        self.visit_u64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FileMode, E> {
        FileMode::parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::CommandKind;
    use serde_json::{json, Value};

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn put(extra: Value) -> Result<CommandKind, String> {
        let mut args = json!({"path": "/tmp/x", "size": 3, "sha256": SHA, "upload": "u1"});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            args[k] = v;
        }
        CommandKind::parse("put_file", &args).map_err(|e| e.to_string())
    }

    #[test]
    fn put_file_parses_with_defaults() {
        let CommandKind::PutFile(a) = put(json!({})).unwrap() else {
            panic!("not put_file")
        };
        assert_eq!((a.offset, a.mode, a.size), (0, None, 3));
    }

    #[test]
    fn modes_are_octal_strings_or_integer_values() {
        for (mode, want) in [
            (json!("0644"), 0o644),
            (json!("755"), 0o755),
            (json!("0o600"), 0o600),
            (json!(420), 0o644),
            (json!("4755"), 0o4755),
        ] {
            let CommandKind::PutFile(a) = put(json!({ "mode": mode })).unwrap() else {
                panic!()
            };
            assert_eq!(a.mode, Some(FileMode(want)), "{mode}");
        }
        assert_eq!(
            serde_json::to_value(FileMode(0o644)).unwrap(),
            json!("0644")
        );
    }

    #[test]
    fn bad_modes_name_the_field() {
        for mode in [
            json!("0999"),
            json!("rw-r--r--"),
            json!(70000),
            json!(-1),
            json!(true),
        ] {
            let err = put(json!({ "mode": mode })).unwrap_err();
            assert!(err.contains("`mode`"), "{mode}: {err}");
        }
    }

    #[test]
    fn bad_put_args_name_their_field() {
        for (extra, field) in [
            (json!({"sha256": "abc"}), "`sha256`"),
            (json!({"upload": "a/b"}), "`upload`"),
            (json!({"upload": "x".repeat(65)}), "`upload`"),
            (json!({"offset": 4}), "`offset`"),
            (json!({"path": " "}), "`path`"),
            (json!({"path": "a".repeat(MAX_PATH_LEN + 1)}), "`path`"),
            (json!({"size": -1}), "`size`"),
            (json!({"chunk": 1}), "`chunk`"),
        ] {
            let err = put(extra.clone()).unwrap_err();
            assert!(err.contains(field), "{extra}: {err}");
        }
        let err = CommandKind::parse("put_file", &json!({"path": "/x"})).unwrap_err();
        assert!(err.to_string().contains("missing field `size`"), "{err}");
    }

    #[test]
    fn get_file_length_is_bounded() {
        let CommandKind::GetFile(a) =
            CommandKind::parse("get_file", &json!({"path": "/x"})).unwrap()
        else {
            panic!()
        };
        assert_eq!((a.offset, a.length), (0, MAX_GET_LENGTH));
        for length in [0, MAX_GET_LENGTH + 1] {
            let args = json!({"path": "/x", "length": length});
            let err = CommandKind::parse("get_file", &args).unwrap_err();
            assert!(err.to_string().contains("`length`"), "{err}");
        }
        assert!(CommandKind::parse("get_file", &json!({"offset": 1})).is_err());
    }
}
