//! Rollout of a fanout in batches (issue 14, DESIGN §11): the top-level command fields `batch`,
//! `batch_wait` and `max_failures`, their checks, and the plan they resolve to once the number
//! of targets is known. A pure module: the controller's `rollout` drives the plan in Redis.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::args::{CommandKind, MAX_SECONDS};
use crate::command::CommandError;

/// A number of targets: a count, or a percentage of the targets (`"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(u64),
    Percent(u8),
}

impl Amount {
    /// Reads `field`'s value: an integer, or a string holding an integer or `"N%"`.
    fn parse(field: &'static str, value: &Value) -> Result<Amount, CommandError> {
        let neither = || {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            bad(
                field,
                format!("`{shown}` is neither a count nor a percentage like \"25%\""),
            )
        };
        match value {
            Value::Number(n) => n.as_u64().map(Amount::Count).ok_or_else(neither),
            Value::String(s) => {
                let s = s.trim();
                match s.strip_suffix('%') {
                    Some(p) => match p.trim().parse::<u64>() {
                        Ok(p) if p <= 100 => Ok(Amount::Percent(p as u8)),
                        Ok(p) => Err(bad(field, format!("{p}% is over 100%"))),
                        Err(_) => Err(neither()),
                    },
                    None => s.parse::<u64>().map(Amount::Count).map_err(|_| neither()),
                }
            }
            _ => Err(neither()),
        }
    }

    /// This amount of `n` targets, a percentage rounded up (a batch).
    pub fn of_rounded_up(self, n: usize) -> usize {
        match self {
            Amount::Count(c) => usize::try_from(c).unwrap_or(usize::MAX),
            Amount::Percent(p) => (n * p as usize).div_ceil(100),
        }
    }

    /// This amount of `n` targets, a percentage rounded down (a failure budget).
    pub fn of_rounded_down(self, n: usize) -> usize {
        match self {
            Amount::Count(c) => usize::try_from(c).unwrap_or(usize::MAX),
            Amount::Percent(p) => n * p as usize / 100,
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(c) => write!(f, "{c}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Count(c) => s.serialize_u64(*c),
            Amount::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let value = Value::deserialize(d)?;
        Amount::parse("amount", &value).map_err(serde::de::Error::custom)
    }
}

/// A command's rollout fields, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Targets released at a time (at least 1).
    pub batch: Amount,
    /// Seconds between the end of a batch (its last result) and the release of the next.
    pub batch_wait: u64,
    /// Failed results (state other than `OK`) tolerated; one more stops the rollout. `None`:
    /// no limit, every batch is released (Salt's `--batch` and Ansible's `serial` behave so).
    pub max_failures: Option<Amount>,
}

impl Rollout {
    /// The plan for `targets` targets.
    pub fn plan(&self, targets: usize) -> Plan {
        Plan {
            batch: self.batch.of_rounded_up(targets).max(1),
            batch_wait: self.batch_wait,
            max_failures: self.max_failures.map(|m| m.of_rounded_down(targets)),
        }
    }
}

/// A rollout resolved against its number of targets: what the job record keeps (field
/// `rollout`, as JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub batch: usize,
    pub batch_wait: u64,
    /// `null`: no limit.
    pub max_failures: Option<usize>,
}

/// The rollout fields.
pub const FIELDS: [&str; 3] = ["batch", "batch_wait", "max_failures"];

/// Checks the rollout fields of a raw command object: their shapes and bounds, and that they
/// come with `fanout: true` (and `batch_wait`, `max_failures` with `batch`).
pub(crate) fn check(obj: &Map<String, Value>) -> Result<Option<Rollout>, CommandError> {
    let given = |f: &str| obj.get(f).filter(|v| !v.is_null());
    let fanout = obj.get("fanout") == Some(&Value::Bool(true));
    for field in FIELDS {
        if given(field).is_some() && !fanout {
            return Err(bad(
                field,
                "only a fanout command (`fanout: true`) rolls out in batches".into(),
            ));
        }
    }
    let Some(batch) = given("batch") else {
        for field in ["batch_wait", "max_failures"] {
            if given(field).is_some() {
                return Err(bad(field, "needs `batch` (the size of each batch)".into()));
            }
        }
        return Ok(None);
    };
    let batch = Amount::parse("batch", batch)?;
    if matches!(batch, Amount::Count(0) | Amount::Percent(0)) {
        return Err(bad("batch", "must be at least 1 (or 1%)".into()));
    }
    let batch_wait = match given("batch_wait") {
        None => 0,
        Some(v) => match v.as_u64() {
            Some(s) if s <= MAX_SECONDS => s,
            Some(s) => {
                return Err(bad(
                    "batch_wait",
                    format!("{s} is too long: at most {MAX_SECONDS} seconds (10 years)"),
                ))
            }
            None => {
                return Err(bad(
                    "batch_wait",
                    format!("`{v}` is not a number of seconds >= 0"),
                ))
            }
        },
    };
    let max_failures = given("max_failures")
        .map(|v| Amount::parse("max_failures", v))
        .transpose()?;
    Ok(Some(Rollout {
        batch,
        batch_wait,
        max_failures,
    }))
}

/// A rollout releases a batch once every target of the one before has its final result: a job
/// that never posts one (recurring, on a cron schedule, or long-running) would stall it for good.
pub(crate) fn check_ends(kind: &CommandKind) -> Result<(), CommandError> {
    let (CommandKind::Execute(a) | CommandKind::ExecutePy(a) | CommandKind::ExecuteLua(a)) = kind
    else {
        return Ok(());
    };
    let never = if a.recurring_period > 0 {
        "args.recurring_period > 0"
    } else if a.cron.is_some() {
        "args.cron"
    } else if a.max_time == -1 {
        "args.max_time -1"
    } else {
        return Ok(());
    };
    Err(bad(
        "batch",
        format!(
            "a rollout waits for each batch's final results, and a job with {never} never ends: \
             roll out a job that ends"
        ),
    ))
}

pub(crate) fn bad(field: &'static str, detail: String) -> CommandError {
    CommandError::Rollout { field, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    fn parse(extra: &str) -> Result<Option<Rollout>, CommandError> {
        let raw = format!(r#"{{"id":"x","gid":1,"role":"web","cmd":"ping"{extra}}}"#);
        Command::parse(raw.as_bytes())
            .map(|(c, _)| c.rollout())
            .map_err(|(_, e)| e)
    }

    #[test]
    fn a_count_and_a_percentage() {
        let r = parse(r#","fanout":true,"batch":2,"batch_wait":5,"max_failures":"10%""#)
            .unwrap()
            .unwrap();
        assert_eq!(
            r,
            Rollout {
                batch: Amount::Count(2),
                batch_wait: 5,
                max_failures: Some(Amount::Percent(10))
            }
        );
        let r = parse(r#","fanout":true,"batch":"25%""#).unwrap().unwrap();
        assert_eq!(
            (r.batch, r.batch_wait, r.max_failures),
            (Amount::Percent(25), 0, None)
        );
        let r = parse(r#","fanout":true,"batch":"3","max_failures":0"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.batch, r.max_failures),
            (Amount::Count(3), Some(Amount::Count(0)))
        );
    }

    #[test]
    fn no_batch_is_no_rollout() {
        assert_eq!(parse(r#","fanout":true"#).unwrap(), None);
        assert_eq!(parse(r#","fanout":true,"batch":null"#).unwrap(), None);
    }

    #[test]
    fn a_batch_that_is_not_an_amount_is_named() {
        let err = parse(r#","fanout":true,"batch":"abc""#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch: `abc` is neither a count nor a percentage like \"25%\""
        );
        for bad in [r#"-1"#, r#"1.5"#, r#"true"#, r#""x%""#, r#"[1]"#] {
            let err = parse(&format!(r#","fanout":true,"batch":{bad}"#)).unwrap_err();
            assert!(err.to_string().starts_with("batch: "), "{bad}: {err}");
        }
    }

    #[test]
    fn bounds_are_checked() {
        let err = parse(r#","fanout":true,"batch":0"#).unwrap_err();
        assert!(
            err.to_string().starts_with("batch: must be at least 1"),
            "{err}"
        );
        let err = parse(r#","fanout":true,"batch":"0%""#).unwrap_err();
        assert!(err.to_string().starts_with("batch: "), "{err}");
        let err = parse(r#","fanout":true,"batch":"101%""#).unwrap_err();
        assert_eq!(err.to_string(), "batch: 101% is over 100%");
        let err = parse(r#","fanout":true,"batch":1,"max_failures":"150%""#).unwrap_err();
        assert!(err.to_string().starts_with("max_failures: "), "{err}");
        let err = parse(r#","fanout":true,"batch":1,"batch_wait":999999999999"#).unwrap_err();
        assert!(err.to_string().contains("batch_wait: ") && err.to_string().contains("too long"));
        let err = parse(r#","fanout":true,"batch":1,"batch_wait":"5""#).unwrap_err();
        assert!(err.to_string().starts_with("batch_wait: "), "{err}");
    }

    #[test]
    fn rollout_fields_need_a_fanout_and_a_batch() {
        for field in ["\"batch\":2", "\"batch_wait\":2", "\"max_failures\":2"] {
            let err = parse(&format!(",{field}")).unwrap_err();
            let name = field.split('"').nth(1).unwrap();
            assert!(
                err.to_string()
                    .starts_with(&format!("{name}: only a fanout")),
                "{err}"
            );
            let err = parse(&format!(r#","fanout":false,{field}"#)).unwrap_err();
            assert!(err.to_string().starts_with(&format!("{name}: ")), "{err}");
        }
        let err = parse(r#","fanout":true,"max_failures":1"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "max_failures: needs `batch` (the size of each batch)"
        );
    }

    #[test]
    fn a_rollout_of_a_job_that_never_ends_is_refused() {
        let execute = |args: &str| {
            let raw = format!(
                r#"{{"id":"x","gid":1,"role":"web","fanout":true,"batch":1,"cmd":"execute","args":{{"cmd":"true"{args}}}}}"#
            );
            Command::parse(raw.as_bytes())
                .map(|_| ())
                .map_err(|(_, e)| e.to_string())
        };
        for (args, named) in [
            (r#","recurring_period":60"#, "args.recurring_period"),
            (r#","cron":"* * * * *""#, "args.cron"),
            (r#","max_time":-1"#, "args.max_time -1"),
        ] {
            let err = execute(args).unwrap_err();
            assert!(
                err.starts_with("batch: ") && err.contains(named),
                "{args}: {err}"
            );
        }
        assert_eq!(execute(r#","max_time":30"#), Ok(()));
        // Without `batch`, the same jobs are a plain fanout.
        let raw = r#"{"id":"x","gid":1,"role":"web","fanout":true,"cmd":"execute","args":{"cmd":"true","recurring_period":60}}"#;
        assert!(Command::parse(raw.as_bytes()).is_ok());
    }

    #[test]
    fn a_plan_rounds_batches_up_and_failures_down() {
        let r = Rollout {
            batch: Amount::Percent(25),
            batch_wait: 0,
            max_failures: Some(Amount::Percent(25)),
        };
        assert_eq!(
            r.plan(5),
            Plan {
                batch: 2,
                batch_wait: 0,
                max_failures: Some(1)
            }
        );
        assert_eq!(
            r.plan(3),
            Plan {
                batch: 1,
                batch_wait: 0,
                max_failures: Some(0)
            }
        );
        let one = Rollout {
            batch: Amount::Percent(1),
            batch_wait: 0,
            max_failures: None,
        };
        assert_eq!(one.plan(2).batch, 1);
        assert_eq!(one.plan(2).max_failures, None);
    }

    #[test]
    fn a_rollout_command_round_trips() {
        let raw = r#"{"id":"x","gid":1,"role":"web","fanout":true,"cmd":"ping","batch":"25%","batch_wait":3,"max_failures":1}"#;
        let (cmd, _) = Command::parse(raw.as_bytes()).unwrap();
        let again = serde_json::to_string(&cmd).unwrap();
        let (back, _) = Command::parse(again.as_bytes()).unwrap();
        assert_eq!(back, cmd);
        assert!(again.contains(r#""batch":"25%""#), "{again}");
    }
}
