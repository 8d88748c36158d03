//! Typed `args` of each command the agents know (DESIGN §3 and §6.2). Parsing them at the
//! controller means a typo or a wrong type is answered at once with a clear `ERROR`, instead of
//! travelling to an agent.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::files::{GetFileArgs, PutFileArgs};
use crate::schedule::{InvalidSchedule, Schedule};

/// `args` of `execute`, `execute_js_py` and `execute_js_lua`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteArgs {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub name: String,
    /// `execute` only: the executable, a full path or a name on PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workingdir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Scripts only: inline source instead of `<jumpscripts_dir>/<domain>/<name>.py|.lua`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Seconds: `>0` timeout, `0` no limit, `-1` long-running (remembered, restarted).
    #[serde(default)]
    pub max_time: i64,
    #[serde(default)]
    pub max_restart: u32,
    #[serde(default)]
    pub recurring_period: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglevels: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglevels_db: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglevels_ac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Seconds the command may wait for an offline agent before it ends `ERROR` (0: forever).
    #[serde(default)]
    pub max_wait: u64,
    /// `false`: the job's lines are not forwarded as live output (`output:<id>`); absent or
    /// `true`: they are, unless the agent's config turns live output off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<bool>,
    /// A cron expression (5 fields, or 6 with seconds first): the job runs at each of its times,
    /// like a recurring job, never overlapping itself ([`crate::schedule`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA zone of `cron`'s times (UTC when absent); only with `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
}

impl ExecuteArgs {
    /// The job's cron schedule: `None` without `args.cron`; an error naming the field when
    /// `cron` or `tz` is bad.
    pub fn schedule(&self) -> Result<Option<Schedule>, InvalidSchedule> {
        Schedule::of(self.cron.as_deref(), self.tz.as_deref())
    }
}

/// Filters of `get_msgs` and `del_msgs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsgFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timefrom: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeto: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<String>,
    #[serde(default)]
    pub max_wait: u64,
}

/// Filters of `get_processes_stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub max_wait: u64,
}

/// `args` of the commands that name one job (`kill`, `get_process_stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub id: String,
    #[serde(default)]
    pub max_wait: u64,
}

/// `args` of commands that take none but `max_wait`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {
    #[serde(default)]
    pub max_wait: u64,
}

/// A command name with its parsed `args`.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandKind {
    Execute(ExecuteArgs),
    ExecutePy(ExecuteArgs),
    ExecuteLua(ExecuteArgs),
    Ping,
    GetOsInfo,
    GetCpuInfo,
    GetMemInfo,
    GetDiskInfo,
    GetNicInfo,
    GetProcessesStats(ProcessFilter),
    GetProcessStats(JobRef),
    GetMsgs(MsgFilter),
    DelMsgs(MsgFilter),
    Kill(JobRef),
    Killall,
    Restart,
    PutFile(PutFileArgs),
    GetFile(GetFileArgs),
}

/// Why a command's `args` were refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidArgs {
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error("bad args for `{cmd}`: {detail}")]
    Bad { cmd: String, detail: String },
}

/// The commands the agents know, for `--help` texts and error messages.
pub const COMMANDS: &[&str] = &[
    "execute",
    "execute_js_py",
    "execute_js_lua",
    "ping",
    "get_os_info",
    "get_cpu_info",
    "get_mem_info",
    "get_disk_info",
    "get_nic_info",
    "get_processes_stats",
    "get_process_stats",
    "get_msgs",
    "del_msgs",
    "kill",
    "killall",
    "restart",
    "put_file",
    "get_file",
];

impl CommandKind {
    pub fn parse(cmd: &str, args: &Value) -> Result<CommandKind, InvalidArgs> {
        let args = if args.is_null() {
            &Value::Object(Default::default())
        } else {
            args
        };
        let kind = match cmd {
            "execute" => CommandKind::Execute(typed(cmd, args)?),
            "execute_js_py" => CommandKind::ExecutePy(typed(cmd, args)?),
            "execute_js_lua" => CommandKind::ExecuteLua(typed(cmd, args)?),
            "ping" => no_args(cmd, args, CommandKind::Ping)?,
            "get_os_info" => no_args(cmd, args, CommandKind::GetOsInfo)?,
            "get_cpu_info" => no_args(cmd, args, CommandKind::GetCpuInfo)?,
            "get_mem_info" => no_args(cmd, args, CommandKind::GetMemInfo)?,
            "get_disk_info" => no_args(cmd, args, CommandKind::GetDiskInfo)?,
            "get_nic_info" => no_args(cmd, args, CommandKind::GetNicInfo)?,
            "get_processes_stats" => CommandKind::GetProcessesStats(typed(cmd, args)?),
            "get_process_stats" => CommandKind::GetProcessStats(typed(cmd, args)?),
            "get_msgs" => CommandKind::GetMsgs(typed(cmd, args)?),
            "del_msgs" => CommandKind::DelMsgs(typed(cmd, args)?),
            "kill" => CommandKind::Kill(typed(cmd, args)?),
            "killall" => no_args(cmd, args, CommandKind::Killall)?,
            "restart" => no_args(cmd, args, CommandKind::Restart)?,
            "put_file" => CommandKind::PutFile(typed(cmd, args)?),
            "get_file" => CommandKind::GetFile(typed(cmd, args)?),
            other => return Err(InvalidArgs::UnknownCommand(other.to_owned())),
        };
        kind.check(cmd)?;
        Ok(kind)
    }

    /// Rules serde cannot say: required fields that depend on the command, value ranges.
    fn check(&self, cmd: &str) -> Result<(), InvalidArgs> {
        self.check_durations(cmd)?;
        let bad = |detail: &str| {
            Err(InvalidArgs::Bad {
                cmd: cmd.to_owned(),
                detail: detail.to_owned(),
            })
        };
        match self {
            CommandKind::Execute(a) | CommandKind::ExecutePy(a) | CommandKind::ExecuteLua(a) => {
                if a.max_time < -1 {
                    return bad(
                        "`max_time` must be -1 (long-running), 0 (no limit) or a number of seconds",
                    );
                }
                if matches!(self, CommandKind::Execute(_)) {
                    match &a.cmd {
                        None => return bad("missing `cmd`: the executable to run"),
                        Some(c) if c.trim().is_empty() => return bad("`cmd` is empty"),
                        Some(_) => {}
                    }
                    if a.script.is_some() {
                        return bad("`script` is for execute_js_py and execute_js_lua");
                    }
                } else {
                    if a.cmd.is_some() {
                        return bad(
                            "`cmd` is for execute; a script comes from `script` or domain/name",
                        );
                    }
                    if a.script.is_none() && (a.domain.is_empty() || a.name.is_empty()) {
                        return bad("give `script`, or `domain` and `name` of a script in the jumpscripts dir");
                    }
                }
                if a.queue.as_deref().is_some_and(str::is_empty) {
                    return bad("`queue` is empty");
                }
                if a.stats_interval == Some(0) {
                    return bad("`stats_interval` must be at least 1 second");
                }
                check_schedule(a).map_err(|detail| InvalidArgs::Bad {
                    cmd: cmd.to_owned(),
                    detail,
                })
            }
            CommandKind::Kill(j) | CommandKind::GetProcessStats(j) if j.id.is_empty() => {
                bad("`id` is empty")
            }
            CommandKind::PutFile(a) => a.check().or_else(|detail| bad(&detail)),
            CommandKind::GetFile(a) => a.check().or_else(|detail| bad(&detail)),
            _ => Ok(()),
        }
    }
}

/// Longest duration any argument may ask for, in seconds (10 years): far beyond any real job,
/// and far from the limits where adding it to a clock overflows.
pub const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

impl CommandKind {
    /// Every duration argument is at most [`MAX_SECONDS`].
    fn check_durations(&self, cmd: &str) -> Result<(), InvalidArgs> {
        let (CommandKind::Execute(a) | CommandKind::ExecutePy(a) | CommandKind::ExecuteLua(a)) =
            self
        else {
            return Ok(());
        };
        let durations = [
            ("max_time", u64::try_from(a.max_time).unwrap_or(0)),
            ("recurring_period", a.recurring_period),
            ("stats_interval", a.stats_interval.unwrap_or(0)),
        ];
        match durations.iter().find(|(_, secs)| *secs > MAX_SECONDS) {
            Some((field, secs)) => Err(InvalidArgs::Bad {
                cmd: cmd.to_owned(),
                detail: format!(
                    "`{field}` {secs} is too long: at most {MAX_SECONDS} seconds (10 years)"
                ),
            }),
            None => Ok(()),
        }
    }
}

/// `cron` and `tz` parse, and `cron` is not combined with another way of running again.
fn check_schedule(a: &ExecuteArgs) -> Result<(), String> {
    if a.schedule().map_err(|e| e.to_string())?.is_none() {
        return Ok(());
    }
    if a.recurring_period > 0 {
        return Err("args.cron and args.recurring_period > 0 together: give one schedule".into());
    }
    if a.max_time == -1 {
        return Err(
            "args.cron with args.max_time -1: a cron job's runs end; -1 is for daemons".into(),
        );
    }
    Ok(())
}

/// Deserializes `args`, naming the offending field in the error.
fn typed<T: DeserializeOwned>(cmd: &str, args: &Value) -> Result<T, InvalidArgs> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let detail = if path == "." {
            e.inner().to_string()
        } else {
            format!("`{path}`: {}", e.inner())
        };
        InvalidArgs::Bad {
            cmd: cmd.to_owned(),
            detail,
        }
    })
}

fn no_args(cmd: &str, args: &Value, kind: CommandKind) -> Result<CommandKind, InvalidArgs> {
    typed::<NoArgs>(cmd, args).map(|_| kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn execute_needs_cmd() {
        let err = CommandKind::parse("execute", &json!({"args": ["-l"]})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad args for `execute`: missing `cmd`: the executable to run"
        );
    }

    #[test]
    fn execute_with_all_fields() {
        let args = json!({"domain":"ops","name":"ls","cmd":"/bin/ls","args":["-l"],"workingdir":"$tmp",
            "env":{"A":"1"},"max_time":10,"max_restart":2,"recurring_period":0,"stats_interval":5,
            "loglevels":"*","loglevels_db":"1-5","loglevels_ac":"8,9","queue":"q","max_wait":3});
        let CommandKind::Execute(a) = CommandKind::parse("execute", &args).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.cmd.as_deref(), a.max_time, a.max_wait),
            (Some("/bin/ls"), 10, 3)
        );
    }

    #[test]
    fn wrong_arg_types_say_which() {
        let err = CommandKind::parse("execute", &json!({"cmd": "/bin/ls", "max_time": "ten"}))
            .unwrap_err();
        assert!(
            err.to_string().contains("invalid type: string \"ten\""),
            "{err}"
        );
        let err =
            CommandKind::parse("execute", &json!({"cmd": "/bin/ls", "args": "-l"})).unwrap_err();
        assert!(err.to_string().contains("expected a sequence"), "{err}");
    }

    #[test]
    fn unknown_arg_is_named() {
        let err =
            CommandKind::parse("execute", &json!({"cmd": "/bin/ls", "max_tme": 3})).unwrap_err();
        assert!(err.to_string().contains("unknown field `max_tme`"), "{err}");
    }

    #[test]
    fn negative_periods_are_refused() {
        let err = CommandKind::parse("execute", &json!({"cmd": "x", "recurring_period": -5}))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("`recurring_period`: invalid value: integer `-5`"),
            "{err}"
        );
        let err = CommandKind::parse("execute", &json!({"cmd": "x", "max_time": -2})).unwrap_err();
        assert!(err.to_string().contains("max_time"), "{err}");
    }

    #[test]
    fn scripts_need_source_or_name() {
        let err = CommandKind::parse("execute_js_py", &json!({"domain": "ops"})).unwrap_err();
        assert!(err.to_string().contains("give `script`"), "{err}");
        assert!(CommandKind::parse("execute_js_lua", &json!({"script": "print(1)"})).is_ok());
    }

    #[test]
    fn durations_past_ten_years_are_refused_with_their_field() {
        for field in ["max_time", "recurring_period", "stats_interval"] {
            let args = json!({"cmd": "x", field: u64::MAX / 2});
            let err = CommandKind::parse("execute", &args)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field) && err.contains("too long"), "{err}");
        }
        let ok = json!({"cmd": "x", "recurring_period": MAX_SECONDS, "max_time": MAX_SECONDS});
        assert!(CommandKind::parse("execute", &ok).is_ok());
    }

    #[test]
    fn ping_takes_no_args_but_max_wait() {
        assert_eq!(
            CommandKind::parse("ping", &Value::Null).unwrap(),
            CommandKind::Ping
        );
        assert_eq!(
            CommandKind::parse("ping", &json!({"max_wait": 5})).unwrap(),
            CommandKind::Ping
        );
        assert!(CommandKind::parse("ping", &json!({"x": 1})).is_err());
    }

    fn cron_error(args: Value) -> String {
        CommandKind::parse("execute", &args)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn cron_and_tz_are_parsed_and_checked() {
        let args = json!({"cmd": "x", "cron": "*/5 * * * *", "tz": "Europe/Berlin"});
        let CommandKind::Execute(a) = CommandKind::parse("execute", &args).unwrap() else {
            panic!()
        };
        let schedule = a.schedule().unwrap().unwrap();
        assert_eq!(
            (schedule.expr(), schedule.tz()),
            ("*/5 * * * *", "Europe/Berlin")
        );
        assert!(CommandKind::parse(
            "execute_js_py",
            &json!({"script": "1", "cron": "0 * * * *"})
        )
        .is_ok());
    }

    #[test]
    fn a_bad_cron_or_zone_is_named() {
        let err = cron_error(json!({"cmd": "x", "cron": "*/5 * *"}));
        assert!(
            err.starts_with(
                "bad args for `execute`: args.cron: `*/5 * *` is not a cron expression: "
            ),
            "{err}"
        );
        let err = cron_error(json!({"cmd": "x", "cron": "* * * * *", "tz": "Mars/Base"}));
        assert_eq!(
            err,
            "bad args for `execute`: args.tz: `Mars/Base` is not an IANA time zone"
        );
        let err = cron_error(json!({"cmd": "x", "tz": "UTC"}));
        assert!(err.contains("args.tz is given without args.cron"), "{err}");
        let err = cron_error(json!({"cmd": "x", "cron": 5}));
        assert!(err.contains("`cron`: invalid type"), "{err}");
    }

    #[test]
    fn cron_with_a_period_or_as_a_daemon_names_both_fields() {
        let err = cron_error(json!({"cmd": "x", "cron": "* * * * *", "recurring_period": 60}));
        assert!(
            err.contains("args.cron") && err.contains("args.recurring_period"),
            "{err}"
        );
        let err = cron_error(json!({"cmd": "x", "cron": "* * * * *", "max_time": -1}));
        assert!(
            err.contains("args.cron") && err.contains("args.max_time"),
            "{err}"
        );
        assert!(CommandKind::parse(
            "execute",
            &json!({"cmd": "x", "cron": "* * * * *", "max_time": 30})
        )
        .is_ok());
    }

    #[test]
    fn kill_needs_an_id() {
        assert!(CommandKind::parse("kill", &json!({})).is_err());
        assert!(CommandKind::parse("kill", &json!({"id": "j1"})).is_ok());
    }
}
