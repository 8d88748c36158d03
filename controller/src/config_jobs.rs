//! Config-file jobs (issue 14): jobs an agent starts itself from the `[[job]]` tables of its
//! config, with ids `cfg:<gid>:<nid>:<name>`. No router created their record: the agent's hello
//! names them ([`declare`], `lua/declare_config_job.lua`), and so does the first result it posts
//! for one ([`open`], `lua/open_config_job.lua`); whichever comes first creates it: `targets`
//! that agent alone, `RUNNING`, `recurring` '1' (every config job is a daemon or runs on a
//! schedule), `submitted_by` "config", and the job in the histories (`jobs:all`,
//! `jobs:agent:<g:n>`, and `jobs:name:<d>/<n>` once a result tells them) like a routed job. Its
//! `cmd` is the result's `cmd` and `args` (a hello knows only id, gid and nid). Then the result is
//! recorded as any other (`record_result.lua`), which renews the record's TTL with every run.
//!
//! Only the agent an id names may post for it: a token never creates or touches the record of
//! another agent's config job. Clients may not route commands with such ids (the router refuses
//! them), so a `cfg:` record is always one an agent opened.
//!
//! An agent starts a config job again at its next start after a `kill` (or after removing and
//! restoring its table), with its runs numbered on: the hello of that start (another `started`
//! than the record's `incarnation`) reopens the record, and so does a result of a later run than
//! the agent's recorded final result, whichever arrives first.

use serde_json::{json, Value};

use schemas::command::{has_hash_tag_char, valid_id};
use schemas::JobResult;

use crate::keys;
use crate::redis_conn::Conn;
use crate::router::index;
use crate::state::Shared;

/// What every config job id starts with.
pub const ID_PREFIX: &str = "cfg:";

/// Why the router refuses a client's command with a config job id.
pub const RESERVED: &str =
    "ids starting with `cfg:` are reserved for config-file jobs, which agents start themselves";

/// The agent (`"gid:nid"`) whose config job `id` is, if it is one: `cfg:<gid>:<nid>:<name>`.
pub fn owner(id: &str) -> Option<String> {
    let rest = id.strip_prefix(ID_PREFIX)?;
    let mut parts = rest.splitn(3, ':');
    let gid: u64 = parts.next()?.parse().ok()?;
    let nid: u64 = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    (!name.is_empty()).then(|| keys::agent_id(gid, nid))
}

/// Whether `id` starts like a config job id (the router refuses every such id from clients).
pub fn is_reserved(id: &str) -> bool {
    id.starts_with(ID_PREFIX)
}

/// What [`open`] did with a config job's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// `agent` may not post for this id: it is another agent's config job, or no config job id.
    NotTheOwner,
    /// The record is there (created now, reopened, or as it was).
    Open,
}

/// Opens the record of config job `result.id` for a result of `agent`, creating it (and its
/// history entries) on first sight.
pub async fn open(
    state: &Shared,
    conn: &mut Conn,
    agent: &str,
    result: &JobResult,
) -> redis::RedisResult<Opened> {
    if owner(&result.id).as_deref() != Some(agent) {
        return Ok(Opened::NotTheOwner);
    }
    let cmd = command_of(result);
    let ttl = state.config.result_ttl;
    let status: String = state
        .scripts
        .open_config_job
        .key(keys::job(&result.id))
        .arg(agent)
        .arg(cmd.to_string())
        .arg(schemas::now_ms())
        .arg(ttl.as_secs())
        .arg(result.run)
        .invoke_async(conn)
        .await?;
    if status != "open" {
        tracing::info!(id = %result.id, agent, status, "config job record opened");
        add_to_history(conn, agent, &result.id, &result.args, ttl).await?;
    }
    Ok(Opened::Open)
}

/// Most config jobs one hello may declare (the agent's own limit of `[[job]]` tables).
pub const MAX_DECLARED: usize = 256;

/// Declares the config jobs `ids` agent `agent` started at `started` (its hello's): their
/// records exist (`lua/declare_config_job.lua`) and are in the histories before their first
/// result. Ids that are not this agent's config jobs are skipped; the answer's warnings say so.
pub async fn declare(
    state: &Shared,
    agent: &str,
    started: u64,
    ids: &[String],
) -> redis::RedisResult<Vec<String>> {
    let mut warnings = Vec::new();
    if ids.len() > MAX_DECLARED {
        warnings.push(format!(
            "{} config jobs declared (at most {MAX_DECLARED}); the rest get their records at \
             their first result",
            ids.len()
        ));
    }
    let mut conn = state.conn();
    let ttl = state.config.result_ttl;
    for id in ids.iter().take(MAX_DECLARED) {
        if owner(id).as_deref() != Some(agent) || has_hash_tag_char(id) || !valid_id(id) {
            let shown: String = id.chars().take(64).collect();
            warnings.push(format!(
                "`{shown}` is not a config job id of agent {agent}; ignored"
            ));
            continue;
        }
        let (gid, nid) = keys::split_agent(agent);
        let cmd = json!({"id": id, "gid": gid, "nid": nid});
        let status: String = state
            .scripts
            .declare_config_job
            .key(keys::job(id))
            .arg(agent)
            .arg(cmd.to_string())
            .arg(schemas::now_ms())
            .arg(ttl.as_secs())
            .arg(started)
            .invoke_async(&mut conn)
            .await?;
        if status != "open" {
            tracing::info!(%id, agent, status, "config job declared");
        }
        if status == "created" {
            add_to_history(&mut conn, agent, id, &Value::Null, ttl).await?;
        }
    }
    Ok(warnings)
}

/// Adds config job `id` of `agent` to the job histories, by `args.domain`/`args.name` too when
/// `args` has them.
async fn add_to_history(
    conn: &mut Conn,
    agent: &str,
    id: &str,
    args: &Value,
    ttl: std::time::Duration,
) -> redis::RedisResult<()> {
    let mut history = vec![keys::JOBS_ALL.to_owned(), keys::jobs_of_agent(agent)];
    if let (Value::String(domain), Value::String(name)) = (&args["domain"], &args["name"]) {
        if !name.is_empty() {
            history.push(keys::jobs_named(domain, name));
        }
    }
    let mut pipe = redis::pipe();
    index(&mut pipe, &history, id, ttl);
    pipe.exec_async(conn).await
}

/// The command of a config job as its result tells it (its `data`, stdin, stays on the agent).
fn command_of(result: &JobResult) -> Value {
    json!({
        "id": result.id,
        "gid": result.gid,
        "nid": result.nid,
        "cmd": result.cmd,
        "args": result.args,
    })
}

#[cfg(test)]
mod tests;
