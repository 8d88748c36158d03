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
//! them), so a `cfg:` record is always one an agent opened. An agent token is bounded in what it
//! can make the controller keep: ids in their one canonical form (`schemas::config_job`),
//! commands as a `[[job]]` table makes them, and at most [`MAX_DECLARED`] config jobs per agent
//! (`agent:{g:n}:config_jobs`). Their results keep `args.env` keys, never values ([`masked`]).
//!
//! An agent starts a config job again at its next start after a `kill` (or after removing and
//! restoring its table), with its runs numbered on: the hello of that start (another `started`
//! than the record's `incarnation`) reopens the record, and so does a result of a later run than
//! the agent's recorded final result, whichever arrives first. A reopen keeps the run of the
//! final result it clears (`final_run:<g:n>`): that result posted again later (its answer was
//! lost before the agent restarted) is a duplicate ([`Opened::Stale`]), not the end of the job
//! that runs again.

use serde_json::{json, Value};

use schemas::command::{has_hash_tag_char, valid_id};
use schemas::config_job::MAX_KEY_PART;
use schemas::JobResult;

use crate::keys;
use crate::redis_conn::Conn;
use crate::router::index;
use crate::state::Shared;

/// Why the router refuses a client's command with a config job id.
pub const RESERVED: &str =
    "ids starting with `cfg:` are reserved for config-file jobs, which agents start themselves";

/// The commands a config job may run (the agent's `[[job]]` `type`s).
const KINDS: &[&str] = &["execute", "execute_js_py", "execute_js_lua"];

/// Largest command (`{"id","gid","nid","cmd","args"}`, JSON) a config job's record keeps: the
/// agent bounds a table's command at 64 KiB with its `data`; masking `args.env` may lengthen it.
pub const MAX_COMMAND: usize = 128 * 1024;

/// The agent (`"gid:nid"`) whose config job `id` is, if it is one in the canonical form
/// `cfg:<gid>:<nid>:<name>` ([`schemas::config_job::owner`]).
pub fn owner(id: &str) -> Option<String> {
    schemas::config_job::owner(id).map(|(gid, nid)| keys::agent_id(gid, nid))
}

/// Whether `id` starts like a config job id (the router refuses every such id from clients).
pub fn is_reserved(id: &str) -> bool {
    schemas::config_job::is_config_job(id)
}

/// Why a config job result is refused although its agent posted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its command cannot be a config job's: the reason.
    Command(&'static str),
    /// The agent has [`MAX_DECLARED`] other config jobs already.
    TooMany,
}

impl Refusal {
    /// The `error` code of the refusal in the agent's answer.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Command(_) => "invalid_config_job",
            Refusal::TooMany => "too_many_config_jobs",
        }
    }

    /// The message of the refusal of config job `id`'s result.
    pub fn message(self, id: &str) -> String {
        match self {
            Refusal::Command(why) => format!("config job `{id}`: {why}"),
            Refusal::TooMany => format!(
                "config job `{id}`: this agent has {MAX_DECLARED} config jobs already (at most \
                 {MAX_DECLARED}, an agent's limit of [[job]] tables); unused ones go a \
                 --result-ttl after their last result"
            ),
        }
    }
}

/// What [`open`] did with a config job's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// `agent` may not post for this id: it is another agent's config job, or no config job id.
    NotTheOwner,
    /// The result is refused: nothing was written.
    Refused(Refusal),
    /// A final result the record had ended with before a later start of the job reopened it,
    /// posted again (a lost answer): a duplicate, which must not end the record again.
    Stale,
    /// The record is there (created now, reopened, or as it was).
    Open,
}

/// Opens the record of config job `result.id` for a result of `agent`, creating it (and its
/// history entries) on first sight. The result is checked first — the canonical id of one of
/// `agent`'s config jobs, a command of a kind a `[[job]]` table makes, `args.domain` and
/// `args.name` fit for key names — and the job admitted among the agent's at most
/// [`MAX_DECLARED`] config jobs.
pub async fn open(
    state: &Shared,
    conn: &mut Conn,
    agent: &str,
    result: &JobResult,
    body: &str,
) -> redis::RedisResult<Opened> {
    if owner(&result.id).as_deref() != Some(agent) {
        return Ok(Opened::NotTheOwner);
    }
    let cmd = command_of(result).to_string();
    if let Err(why) = check(result, &cmd) {
        return Ok(Opened::Refused(Refusal::Command(why)));
    }
    let ttl = state.config.result_ttl;
    if !admit(state, conn, agent, &result.id).await? {
        return Ok(Opened::Refused(Refusal::TooMany));
    }
    let status: String = state
        .scripts
        .open_config_job
        .key(keys::job(&result.id))
        .arg(agent)
        .arg(cmd)
        .arg(schemas::now_ms())
        .arg(ttl.as_secs())
        .arg(result.run)
        .arg(if result.is_final { body } else { "" })
        .invoke_async(conn)
        .await?;
    match status.as_str() {
        "open" => {}
        "stale" => return Ok(Opened::Stale),
        _ => {
            tracing::info!(id = %result.id, agent, status, "config job record opened");
            add_to_history(conn, agent, &result.id, &result.args, ttl).await?;
        }
    }
    Ok(Opened::Open)
}

/// Whether `result` (its command `cmd`, JSON) can be a config job's: its id is a valid job id
/// (the canonical form is checked by [`owner`]), its `cmd` one a table makes, its `args` an
/// object whose `domain` and `name` are strings without hash-tag braces, at most
/// [`MAX_KEY_PART`] bytes (as `Command::parse` checks a routed command's), and the command at
/// most [`MAX_COMMAND`] bytes.
fn check(result: &JobResult, cmd: &str) -> Result<(), &'static str> {
    if !valid_id(&result.id) || has_hash_tag_char(&result.id) {
        return Err("not a valid job id");
    }
    if !KINDS.contains(&result.cmd.as_str()) {
        return Err("`cmd` must be execute, execute_js_py or execute_js_lua");
    }
    let Value::Object(args) = &result.args else {
        return Err("`args` must be an object");
    };
    for field in ["domain", "name"] {
        match args.get(field) {
            None | Some(Value::Null) => {}
            // The messages name MAX_KEY_PART (200): a test holds them to it.
            Some(Value::String(part)) if part.len() > MAX_KEY_PART => {
                return Err("`args.domain` and `args.name` take at most 200 bytes")
            }
            Some(Value::String(part)) if has_hash_tag_char(part) => {
                return Err("`args.domain` and `args.name` must not contain `{` or `}`")
            }
            Some(Value::String(_)) => {}
            Some(_) => return Err("`args.domain` and `args.name` must be strings"),
        }
    }
    if cmd.len() > MAX_COMMAND {
        return Err("its command is larger than 128 KiB of JSON");
    }
    Ok(())
}

/// Whether config job `id` of `agent` is one of its at most [`MAX_DECLARED`] config jobs (known,
/// or admitted now): the live output of one whose record does not exist yet is kept only then.
pub async fn admitted(state: &Shared, agent: &str, id: &str) -> redis::RedisResult<bool> {
    admit(state, &mut state.conn(), agent, id).await
}

/// A hello declares every config job the agent has: the ones it no longer has (tables renamed
/// or removed) leave its admitted set, so they cannot keep new ones out until they age out. A
/// removed job's last results, posted after the hello, are admitted again while there is room.
async fn forget_undeclared(conn: &mut Conn, agent: &str, ids: &[String]) -> redis::RedisResult<()> {
    let key = keys::agent_config_jobs(agent);
    let known: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    let gone: Vec<&String> = known.iter().filter(|k| !ids.contains(k)).collect();
    if !gone.is_empty() {
        redis::cmd("ZREM")
            .arg(&key)
            .arg(&gone)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}

/// Admits config job `id` among `agent`'s (`lua/admit_config_job.lua`): whether it is known, or
/// there is room for it.
async fn admit(state: &Shared, conn: &mut Conn, agent: &str, id: &str) -> redis::RedisResult<bool> {
    let admitted: i64 = state
        .scripts
        .admit_config_job
        .key(keys::agent_config_jobs(agent))
        .arg(id)
        .arg(schemas::now_ms())
        .arg(state.config.result_ttl.as_secs())
        .arg(MAX_DECLARED)
        .invoke_async(conn)
        .await?;
    Ok(admitted == 1)
}

/// The result of a config job as the controller keeps it: `args.env` values masked
/// ([`schemas::config_job::mask_env`]; the agent masks them too, this covers older agents).
pub fn masked(result: &JobResult) -> JobResult {
    let mut result = result.clone();
    schemas::config_job::mask_env(&mut result.args);
    result
}

/// Most config jobs one hello may declare (the agent's own limit of `[[job]]` tables).
pub const MAX_DECLARED: usize = 256;

/// Declares the config jobs `ids` agent `agent` started at `started` (its hello's): their
/// records exist (`lua/declare_config_job.lua`) and are in the histories before their first
/// result. Ids that are not this agent's config jobs, and ids beyond its [`MAX_DECLARED`]
/// config jobs (`lua/admit_config_job.lua`), are skipped; the answer's warnings say so.
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
    forget_undeclared(&mut conn, agent, ids).await?;
    for id in ids.iter().take(MAX_DECLARED) {
        if owner(id).as_deref() != Some(agent) || has_hash_tag_char(id) || !valid_id(id) {
            let shown: String = id.chars().take(64).collect();
            warnings.push(format!(
                "`{shown}` is not a config job id of agent {agent}; ignored"
            ));
            continue;
        }
        if !admit(state, &mut conn, agent, id).await? {
            warnings.push(Refusal::TooMany.message(id) + "; ignored");
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
