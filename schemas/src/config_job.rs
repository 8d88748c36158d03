//! Config-file job ids (issue 14): the jobs an agent starts itself from the `[[job]]` tables of
//! its config have ids `cfg:<gid>:<nid>:<name>`, in one canonical form — gid and nid in decimal
//! without sign or leading zeros, `name` 1 to [`MAX_NAME`] of `A-Z a-z 0-9 . _ -` — so one job
//! has one id (and one set of Redis keys). The agent builds them ([`id`]), the controller checks
//! the ids agents post for ([`owner`]): the rules live here, once.
//!
//! Their results carry the job's `args` like any result, but with the values of `args.env`
//! masked ([`mask_env`]): a table's environment often holds secrets, and results end up in
//! Redis and on every screen that shows a job.

use serde_json::Value;

/// What every config job id starts with.
pub const ID_PREFIX: &str = "cfg:";
/// Longest table name (the `<name>` of the id).
pub const MAX_NAME: usize = 64;
/// Longest `args.domain` and `args.name` of a config job: they become parts of Redis key names
/// (`jobs:name:<domain>/<name>`, `log.<domain>.<name>`).
pub const MAX_KEY_PART: usize = 200;
/// What stands for each value of `args.env` in a config job's result.
pub const MASK: &str = "***";

/// The id of table `name` on agent `gid:nid`.
pub fn id(gid: u64, nid: u64, name: &str) -> String {
    format!("{ID_PREFIX}{gid}:{nid}:{name}")
}

/// Whether `id` starts like a config job id (the router refuses every such id from clients).
pub fn is_config_job(id: &str) -> bool {
    id.starts_with(ID_PREFIX)
}

/// Whether `name` may name a table: 1 to [`MAX_NAME`] of `A-Z a-z 0-9 . _ -`.
pub fn valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(allowed)
}

/// The agent `(gid, nid)` whose config job `id` is, if `id` is a canonical config job id.
pub fn owner(id: &str) -> Option<(u64, u64)> {
    let rest = id.strip_prefix(ID_PREFIX)?;
    let mut parts = rest.splitn(3, ':');
    let gid = decimal(parts.next()?)?;
    let nid = decimal(parts.next()?)?;
    valid_name(parts.next()?).then_some((gid, nid))
}

/// A number in its one decimal spelling: digits only, no leading zero (but `0`), no overflow.
fn decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// Replaces each value of `args.env` with [`MASK`], keeping the keys (a result shows which
/// variables a job has, never their values).
pub fn mask_env(args: &mut Value) {
    match args.get_mut("env") {
        Some(Value::Object(env)) => {
            for value in env.values_mut() {
                *value = Value::String(MASK.to_owned());
            }
        }
        Some(other) if !other.is_null() => *other = Value::String(MASK.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_owner_is_the_agent_a_canonical_id_names() {
        assert_eq!(owner("cfg:1:5:backup"), Some((1, 5)));
        assert_eq!(owner("cfg:0:0:a.b_c-d"), Some((0, 0)));
        assert_eq!(owner(&id(3, 14, "x")), Some((3, 14)));
        let long = format!("cfg:1:5:{}", "n".repeat(MAX_NAME));
        assert_eq!(owner(&long), Some((1, 5)));
        for not in [
            "6f1c",
            "cfg:",
            "cfg:1:5:",
            "cfg:1:backup",
            "cfg:x:5:b",
            "cfg:-1:5:b",
            "cfg:+1:5:b",
            "cfg:01:5:b",
            "cfg:1:05:b",
            "cfg:1:5:a:b",
            "cfg:1:5:a{b}",
            "cfg:1:5:a b",
            "cfg:18446744073709551616:5:b",
            &format!("cfg:1:5:{}", "n".repeat(MAX_NAME + 1)),
        ] {
            assert_eq!(owner(not), None, "{not}");
        }
        assert!(is_config_job("cfg:x") && !is_config_job("cf"));
    }

    #[test]
    fn env_values_are_masked_and_keys_kept() {
        let mut args = json!({"cmd": "x", "env": {"SECRET": "s3cret", "PORT": "9100"}});
        mask_env(&mut args);
        assert_eq!(args["env"], json!({"SECRET": MASK, "PORT": MASK}));
        assert_eq!(args["cmd"], "x");
        let mut odd = json!({"env": "A=b"});
        mask_env(&mut odd);
        assert_eq!(odd["env"], MASK);
        let mut none = json!({"cmd": "x"});
        mask_env(&mut none);
        assert_eq!(none, json!({"cmd": "x"}));
        mask_env(&mut Value::Null);
    }
}
