//! Config-file jobs (issue 14): the `[[job]]` tables of the agent config, each turned into the
//! command the agent runs at boot as if it had received it — `{"id": "cfg:<gid>:<nid>:<id>",
//! "gid", "nid", "cmd", "args", "data"}` — and checked by the same [`Command::parse`] the
//! controller routes commands with, so whatever a routed command may not do, a table may not
//! either.
//!
//! A table maps onto the command like this: `type` (or `kind`) is the command (`execute`, the
//! default, `execute_js_py`, `execute_js_lua`); `every` is `args.recurring_period`; `cron` and
//! `tz` are `args.cron` and `args.tz`; `data` is the command's `data` (stdin); every other key
//! is the `args` field of the same name. Without `every` or `cron` a job is a daemon
//! (`max_time` -1: long-running, remembered across agent restarts, restarted after failures as
//! `max_restart` allows).
//!
//! Errors name the table — `job[2] (id "backup"): unknown key `evry`` — numbered from 1 in
//! the order of the file.

use std::collections::{BTreeMap, HashMap};

use schemas::Command;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Most `[[job]]` tables one config may hold.
pub const MAX_JOBS: usize = 256;
/// Longest table `id` (the id rules are [`schemas::config_job`]'s).
pub const MAX_ID: usize = schemas::config_job::MAX_NAME;
/// Largest command one table may make, in bytes of JSON (its `data` and `script` included).
pub const MAX_COMMAND: usize = 64 * 1024;
/// What the id of every config job starts with.
pub use schemas::config_job::ID_PREFIX;

/// The keys a `[[job]]` table may have.
const KEYS: &[&str] = &[
    "id",
    "type",
    "kind",
    "cmd",
    "args",
    "script",
    "every",
    "cron",
    "tz",
    "domain",
    "name",
    "max_time",
    "max_restart",
    "env",
    "workingdir",
    "loglevels",
    "loglevels_db",
    "loglevels_ac",
    "queue",
    "stats_interval",
    "output",
    "data",
];

/// The commands a table may run.
const KINDS: &[&str] = &["execute", "execute_js_py", "execute_js_lua"];

/// A `[[job]]` table, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigJob {
    /// The table's own `id`.
    pub name: String,
    /// The job id, `cfg:<gid>:<nid>:<name>`.
    pub id: String,
    /// The command the agent runs (JSON); the same table always makes the same text.
    pub raw: String,
}

/// The job id of table `name` on agent `gid:nid`.
pub fn job_id(gid: u64, nid: u64, name: &str) -> String {
    schemas::config_job::id(gid, nid, name)
}

/// Whether `id` is the id of a config job (of any agent).
pub fn is_config_job(id: &str) -> bool {
    schemas::config_job::is_config_job(id)
}

/// Checks the `[[job]]` tables of agent `gid:nid`; the error names the table and what is wrong.
pub fn parse(tables: &[toml::Table], gid: u64, nid: u64) -> Result<Vec<ConfigJob>, String> {
    if tables.len() > MAX_JOBS {
        return Err(format!(
            "{} [[job]] tables (at most {MAX_JOBS})",
            tables.len()
        ));
    }
    let mut jobs = Vec::with_capacity(tables.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, table) in tables.iter().enumerate() {
        let table = Table::new(i + 1, table);
        let job = table.job(gid, nid).map_err(|e| table.error(e))?;
        if let Some(first) = seen.insert(job.name.clone(), i + 1) {
            return Err(table.error(format!("duplicate id (job[{first}] has it too)")));
        }
        jobs.push(job);
    }
    Ok(jobs)
}

/// One table and its place in the file.
struct Table<'a> {
    number: usize,
    table: &'a toml::Table,
}

impl<'a> Table<'a> {
    fn new(number: usize, table: &'a toml::Table) -> Table<'a> {
        Table { number, table }
    }

    /// `job[N] (id "x"): <message>`.
    fn error(&self, message: String) -> String {
        match self.table.get("id").and_then(toml::Value::as_str) {
            Some(id) => {
                let id: String = id.chars().take(MAX_ID + 1).collect();
                format!("job[{}] (id {id:?}): {message}", self.number)
            }
            None => format!("job[{}]: {message}", self.number),
        }
    }

    /// The value of `key` as a `T`, if the table has it.
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(value) => value
                .clone()
                .try_into()
                .map(Some)
                .map_err(|e| format!("`{key}`: {}", e.to_string().trim_end())),
        }
    }

    fn job(&self, gid: u64, nid: u64) -> Result<ConfigJob, String> {
        if let Some(key) = self.table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown key `{key}` (a [[job]] table takes {})",
                KEYS.join(", ")
            ));
        }
        let name = self.id()?;
        let id = job_id(gid, nid, &name);
        let mut command = Map::new();
        command.insert("id".into(), Value::String(id.clone()));
        command.insert("gid".into(), gid.into());
        command.insert("nid".into(), nid.into());
        command.insert("cmd".into(), Value::String(self.kind()?));
        command.insert("args".into(), Value::Object(self.args()?));
        if let Some(data) = self.get::<String>("data")? {
            command.insert("data".into(), Value::String(data));
        }
        let raw = Value::Object(command).to_string();
        if raw.len() > MAX_COMMAND {
            return Err(format!(
                "the job's command takes {} bytes of JSON (at most {MAX_COMMAND}): keep big \
                 scripts in the jumpscripts dir and big data in a file",
                raw.len()
            ));
        }
        Command::parse(raw.as_bytes()).map_err(|(_, e)| e.to_string())?;
        Ok(ConfigJob { name, id, raw })
    }

    fn id(&self) -> Result<String, String> {
        let id = self
            .get::<String>("id")?
            .ok_or("missing key `id` (1 to 64 of A-Z a-z 0-9 . _ -)")?;
        if !schemas::config_job::valid_name(&id) {
            return Err(format!(
                "`id` {:?} must be 1 to {MAX_ID} of A-Z a-z 0-9 . _ -",
                id.chars().take(MAX_ID + 1).collect::<String>()
            ));
        }
        Ok(id)
    }

    /// The command: `type` or `kind`, `execute` by default.
    fn kind(&self) -> Result<String, String> {
        let kind = match (self.get::<String>("type")?, self.get::<String>("kind")?) {
            (Some(_), Some(_)) => return Err("give `type` or `kind`, not both".into()),
            (Some(k), None) | (None, Some(k)) => k,
            (None, None) => "execute".into(),
        };
        if !KINDS.contains(&kind.as_str()) {
            return Err(format!(
                "`type` {kind:?} is not one of {}",
                KINDS.join(", ")
            ));
        }
        Ok(kind)
    }

    /// The command's `args`: the table's keys under their `args` names, and the schedule.
    fn args(&self) -> Result<Map<String, Value>, String> {
        let mut args = Map::new();
        for key in [
            "cmd",
            "script",
            "domain",
            "name",
            "workingdir",
            "loglevels",
            "loglevels_db",
            "loglevels_ac",
            "queue",
        ] {
            if let Some(text) = self.get::<String>(key)? {
                args.insert(key.into(), Value::String(text));
            }
        }
        for key in ["domain", "name"] {
            let long = args.get(key).and_then(Value::as_str).map(str::len);
            if let Some(len) = long.filter(|&len| len > schemas::config_job::MAX_KEY_PART) {
                return Err(format!(
                    "`{key}` takes {len} bytes (at most {}): it is part of Redis key names",
                    schemas::config_job::MAX_KEY_PART
                ));
            }
        }
        if let Some(list) = self.get::<Vec<String>>("args")? {
            args.insert("args".into(), list.into());
        }
        if let Some(env) = self.get::<BTreeMap<String, String>>("env")? {
            args.insert("env".into(), serde_json::to_value(env).unwrap_or_default());
        }
        if let Some(n) = self.get::<u32>("max_restart")? {
            args.insert("max_restart".into(), n.into());
        }
        if let Some(n) = self.get::<u64>("stats_interval")? {
            args.insert("stats_interval".into(), n.into());
        }
        if let Some(on) = self.get::<bool>("output")? {
            args.insert("output".into(), on.into());
        }
        self.schedule(&mut args)?;
        Ok(args)
    }

    /// `every` or `cron` (with `tz`), or neither: a daemon. `max_time` goes with the schedule.
    fn schedule(&self, args: &mut Map<String, Value>) -> Result<(), String> {
        let every = self.get::<u64>("every")?;
        let cron = self.get::<String>("cron")?;
        let max_time = self.get::<i64>("max_time")?;
        if let Some(tz) = self.get::<String>("tz")? {
            args.insert("tz".into(), Value::String(tz));
        }
        let scheduled = match (every, cron) {
            (Some(_), Some(_)) => return Err("give `every` or `cron`, not both".into()),
            (Some(0), None) => return Err("`every` must be at least 1 second".into()),
            (Some(secs), None) => {
                args.insert("recurring_period".into(), secs.into());
                true
            }
            (None, Some(cron)) => {
                args.insert("cron".into(), Value::String(cron));
                true
            }
            (None, None) => false,
        };
        match (scheduled, max_time) {
            (true, Some(-1)) => {
                return Err(
                    "`max_time` -1 makes a daemon, which runs without `every` or `cron`; with a \
                     schedule, `max_time` bounds each run (0: no limit)"
                        .into(),
                )
            }
            (false, Some(t)) if t != -1 => {
                return Err(format!(
                    "`max_time` {t}: a job without `every` or `cron` is a daemon (`max_time` -1, \
                     long-running); give `every` or `cron` to run it on a schedule"
                ))
            }
            (true, Some(t)) => {
                args.insert("max_time".into(), t.into());
            }
            (true, None) => {}
            (false, _) => {
                args.insert("max_time".into(), (-1).into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
