//! A command (DESIGN §3): what a client pushes onto `cmds_queue`, and the checks that decide
//! whether it can be routed at all.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::args::{CommandKind, InvalidArgs};
use crate::rollout::{Amount, Rollout};

/// Longest job id accepted. Ids travel in URLs (`ack=`) and Redis key names.
pub const MAX_ID_LEN: usize = 200;

/// A command as it travels from a client through the controller to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub gid: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nid: Option<u64>,
    pub cmd: String,
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub args: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fanout: bool,
    /// Rollout of a fanout in batches ([`crate::rollout`]): targets released at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Amount>,
    /// Seconds between the end of a batch and the release of the next (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_wait: Option<u64>,
    /// Failed results tolerated before the rest of the rollout ends `ERROR` (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<Amount>,
    /// Who submitted the command, as the pusher says (kept in the job record; the controller's
    /// HTTP API sets it to the operator's account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.is_empty())
}

/// Which agents a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One agent, by node id.
    Node { gid: u64, nid: u64 },
    /// Live agents of a role in a grid: one of them, or all of them with `fanout`.
    Role {
        gid: u64,
        role: String,
        fanout: bool,
    },
}

/// Why a command cannot be routed. The text is what the client reads in the `ERROR` result.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` has the wrong type: {detail}")]
    WrongType { field: &'static str, detail: String },
    #[error(
        "id must be 1 to {MAX_ID_LEN} characters without commas, whitespace or control characters"
    )]
    BadId,
    #[error(
        "`{0}` must not contain `{{` or `}}`: in Redis key names they are Redis Cluster hash tags"
    )]
    HashTag(&'static str),
    #[error("no target: give `nid`, or `role` (with optional `fanout`)")]
    NoTarget,
    #[error("give either `nid` or `role`, not both")]
    TwoTargets,
    /// A rollout field (`batch`, `batch_wait`, `max_failures`) that cannot be used.
    #[error("{field}: {detail}")]
    Rollout { field: &'static str, detail: String },
    #[error(transparent)]
    Args(#[from] InvalidArgs),
}

impl Command {
    /// Parses and validates a raw command. On failure, also returns the id when one could be read,
    /// so the caller can answer the client on `cmds_queue_<id>`.
    pub fn parse(raw: &[u8]) -> Result<(Command, CommandKind), (Option<String>, CommandError)> {
        let value: Value = serde_json::from_slice(raw)
            .map_err(|e| (None, CommandError::NotJson(e.to_string())))?;
        let Value::Object(obj) = &value else {
            return Err((None, CommandError::NotObject));
        };
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| valid_id(id))
            .map(str::to_owned);
        Self::check_fields(obj).map_err(|e| (id.clone(), e))?;
        Self::check_key_parts(obj).map_err(|e| (id.clone(), e))?;
        let cmd: Command = serde_json::from_value(value).map_err(|e| {
            (
                id.clone(),
                CommandError::WrongType {
                    field: "command",
                    detail: e.to_string(),
                },
            )
        })?;
        cmd.target().map_err(|e| (id.clone(), e))?;
        let kind = CommandKind::parse(&cmd.cmd, &cmd.args).map_err(|e| (id.clone(), e.into()))?;
        if cmd.rollout().is_some() {
            crate::rollout::check_ends(&kind).map_err(|e| (id.clone(), e))?;
        }
        Ok((cmd, kind))
    }

    /// Field-by-field checks that give a better message than serde's first error.
    fn check_fields(obj: &serde_json::Map<String, Value>) -> Result<(), CommandError> {
        match obj.get("id") {
            None => return Err(CommandError::Missing("id")),
            Some(Value::String(id)) if valid_id(id) => {}
            Some(Value::String(_)) => return Err(CommandError::BadId),
            Some(_) => return Err(wrong("id", "expected a string")),
        }
        match obj.get("cmd") {
            None => return Err(CommandError::Missing("cmd")),
            Some(Value::String(_)) => {}
            Some(_) => return Err(wrong("cmd", "expected a string")),
        }
        match obj.get("gid") {
            None => return Err(CommandError::Missing("gid")),
            Some(v) if v.as_u64().is_some() => {}
            Some(_) => return Err(wrong("gid", "expected an integer >= 0")),
        }
        match obj.get("nid") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64().is_some() => {}
            Some(_) => return Err(wrong("nid", "expected an integer >= 0")),
        }
        match obj.get("role") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => return Err(wrong("role", "expected a string")),
        }
        match obj.get("fanout") {
            None | Some(Value::Null) | Some(Value::Bool(_)) => {}
            Some(_) => return Err(wrong("fanout", "expected true or false")),
        }
        match obj.get("args") {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return Err(wrong("args", "expected an object")),
        }
        crate::rollout::check(obj)?;
        Ok(())
    }

    /// The id, `args.domain` and `args.name` become parts of Redis key names (`job:<id>`,
    /// `log.<domain>.<name>`): a brace there would move a key into another cluster slot than
    /// the keys it is written with. And `args.max_wait` is bounded.
    fn check_key_parts(obj: &serde_json::Map<String, Value>) -> Result<(), CommandError> {
        let braced = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(has_hash_tag_char);
        if braced(obj.get("id")) {
            return Err(CommandError::HashTag("id"));
        }
        let args = obj.get("args");
        // `max_wait` is read by the router (a deadline in ms): bounded like every duration.
        if let Some(wait) = args.and_then(|a| a.get("max_wait")).and_then(Value::as_u64) {
            if wait > crate::args::MAX_SECONDS {
                return Err(CommandError::WrongType {
                    field: "args.max_wait",
                    detail: format!(
                        "{wait} is too long: at most {} seconds (10 years)",
                        crate::args::MAX_SECONDS
                    ),
                });
            }
        }
        for field in ["domain", "name"] {
            if braced(args.and_then(|a| a.get(field))) {
                return Err(CommandError::HashTag(if field == "domain" {
                    "args.domain"
                } else {
                    "args.name"
                }));
            }
        }
        Ok(())
    }

    /// The agents this command is for.
    pub fn target(&self) -> Result<Target, CommandError> {
        match (&self.nid, &self.role) {
            (Some(_), Some(_)) => Err(CommandError::TwoTargets),
            (Some(nid), None) => Ok(Target::Node {
                gid: self.gid,
                nid: *nid,
            }),
            (None, Some(role)) if !role.is_empty() => Ok(Target::Role {
                gid: self.gid,
                role: role.clone(),
                fanout: self.fanout,
            }),
            _ => Err(CommandError::NoTarget),
        }
    }

    /// How this command rolls out in batches, if it does (checked by [`Command::parse`]).
    pub fn rollout(&self) -> Option<Rollout> {
        let batch = self.batch.filter(|_| self.fanout)?;
        Some(Rollout {
            batch,
            batch_wait: self.batch_wait.unwrap_or(0),
            max_failures: self.max_failures,
        })
    }

    /// `args.max_wait`: seconds the command may wait for an offline agent (0: forever).
    pub fn max_wait(&self) -> u64 {
        self.args
            .get("max_wait")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

fn wrong(field: &'static str, detail: &str) -> CommandError {
    CommandError::WrongType {
        field,
        detail: detail.to_owned(),
    }
}

/// Whether a key part holds a Redis Cluster hash-tag character.
pub fn has_hash_tag_char(text: &str) -> bool {
    text.contains(['{', '}'])
}

/// Job ids travel in comma-separated `ack=` lists and in key names.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(Command, CommandKind), (Option<String>, CommandError)> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn braces_in_an_id_or_a_domain_are_refused_with_the_id_kept() {
        let (id, err) = parse(r#"{"id":"a{b}","gid":1,"nid":5,"cmd":"ping"}"#).unwrap_err();
        assert_eq!(
            (id.as_deref(), err),
            (Some("a{b}"), CommandError::HashTag("id"))
        );
        let (_, err) = parse(
            r#"{"id":"a","gid":1,"nid":5,"cmd":"execute","args":{"cmd":"/bin/true","domain":"x}"}}"#,
        )
        .unwrap_err();
        assert_eq!(err, CommandError::HashTag("args.domain"));
        assert!(err.to_string().contains("hash tags"), "{err}");
    }

    #[test]
    fn a_max_wait_past_ten_years_is_refused() {
        let (_, err) = parse(
            r#"{"id":"a","gid":1,"nid":5,"cmd":"ping","args":{"max_wait":18446744073709551615}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("max_wait") && err.to_string().contains("too long"),
            "{err}"
        );
    }

    #[test]
    fn minimal_ping_to_a_node() {
        let (cmd, kind) = parse(r#"{"id":"a","gid":1,"nid":5,"cmd":"ping"}"#).unwrap();
        assert_eq!(cmd.target().unwrap(), Target::Node { gid: 1, nid: 5 });
        assert_eq!(kind, CommandKind::Ping);
    }

    #[test]
    fn not_json_has_no_id() {
        let (id, err) = parse("hello").unwrap_err();
        assert_eq!(id, None);
        assert!(matches!(err, CommandError::NotJson(_)));
    }

    #[test]
    fn array_is_not_an_object() {
        assert_eq!(parse("[1]").unwrap_err(), (None, CommandError::NotObject));
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            parse(r#"{"gid":1,"nid":1,"cmd":"ping"}"#).unwrap_err().1,
            CommandError::Missing("id")
        );
        let (id, err) = parse(r#"{"id":"x","gid":1,"nid":1}"#).unwrap_err();
        assert_eq!(
            (id.as_deref(), err),
            (Some("x"), CommandError::Missing("cmd"))
        );
        assert_eq!(
            parse(r#"{"id":"x","nid":1,"cmd":"ping"}"#).unwrap_err().1,
            CommandError::Missing("gid")
        );
    }

    #[test]
    fn no_target_is_an_error_with_the_id() {
        let (id, err) = parse(r#"{"id":"x","gid":1,"cmd":"ping"}"#).unwrap_err();
        assert_eq!((id.as_deref(), err), (Some("x"), CommandError::NoTarget));
    }

    #[test]
    fn nid_and_role_together_are_refused() {
        let err = parse(r#"{"id":"x","gid":1,"nid":2,"role":"web","cmd":"ping"}"#)
            .unwrap_err()
            .1;
        assert_eq!(err, CommandError::TwoTargets);
    }

    #[test]
    fn role_with_fanout() {
        let (cmd, _) =
            parse(r#"{"id":"x","gid":1,"role":"web","fanout":true,"cmd":"ping"}"#).unwrap();
        assert_eq!(
            cmd.target().unwrap(),
            Target::Role {
                gid: 1,
                role: "web".into(),
                fanout: true
            }
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let err = parse(r#"{"id":"x","gid":"one","nid":2,"cmd":"ping"}"#)
            .unwrap_err()
            .1;
        assert!(matches!(err, CommandError::WrongType { field: "gid", .. }));
        let err = parse(r#"{"id":"x","gid":1,"nid":-2,"cmd":"ping"}"#)
            .unwrap_err()
            .1;
        assert!(matches!(err, CommandError::WrongType { field: "nid", .. }));
        let err = parse(r#"{"id":"x","gid":1,"nid":2,"cmd":"ping","args":[1]}"#)
            .unwrap_err()
            .1;
        assert!(matches!(err, CommandError::WrongType { field: "args", .. }));
    }

    #[test]
    fn ids_with_commas_or_spaces_are_refused() {
        let (id, err) = parse(r#"{"id":"a,b","gid":1,"nid":2,"cmd":"ping"}"#).unwrap_err();
        assert_eq!((id, err), (None, CommandError::BadId));
        assert_eq!(
            parse(r#"{"id":"","gid":1,"nid":2,"cmd":"ping"}"#)
                .unwrap_err()
                .1,
            CommandError::BadId
        );
    }

    #[test]
    fn unknown_command_is_refused_with_its_name() {
        let err = parse(r#"{"id":"x","gid":1,"nid":2,"cmd":"fly"}"#)
            .unwrap_err()
            .1;
        assert_eq!(err.to_string(), "unknown command `fly`");
    }
}
