//! The result of a job on one agent (DESIGN §3): what the agent posts and the controller appends
//! to `cmds_queue_<id>`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job's state. Results carry one of the four final states; the job record is also `QUEUED`
/// and then `RUNNING` before it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    Queued,
    Running,
    Ok,
    Error,
    Timeout,
    Killed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Ok => "OK",
            JobState::Error => "ERROR",
            JobState::Timeout => "TIMEOUT",
            JobState::Killed => "KILLED",
        }
    }

    /// The state named `text` (`"OK"`, …), if it is one.
    pub fn parse(text: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Ok,
            JobState::Error,
            JobState::Timeout,
            JobState::Killed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether a job in this state has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// One agent's result of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub id: String,
    pub gid: u64,
    pub nid: u64,
    pub cmd: String,
    #[serde(default)]
    pub args: Value,
    /// For internal commands the JSON answer; for processes the last result message, or `""`.
    #[serde(default = "empty_string")]
    pub data: Value,
    /// Format of `data` for processes: 20 json, 21 yaml, 22 toml, 23 hrd, 30 job json; 0 when none.
    #[serde(default)]
    pub level: u8,
    pub state: JobState,
    /// Run time in ms.
    #[serde(default)]
    pub time: u64,
    /// Start, ms since the epoch.
    #[serde(default)]
    pub starttime: u64,
    /// Exit code of the process; `null` for internal commands and processes ended by a signal.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Tails of stdout and stderr.
    #[serde(default = "empty_streams")]
    pub streams: Vec<String>,
    /// The last level-9 message, if any.
    #[serde(default)]
    pub critical: String,
    /// Which run of the job this is (1 for the first), for jobs that run more than once
    /// (recurring, restarted); 0 (and absent) for a job that ran once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run: u64,
    /// Cron jobs: how many of the schedule's times passed while this run was still going, and
    /// were skipped (runs never overlap); 0 (and absent) when none. Serialized before `final`,
    /// which must end a run's JSON (the controller's `append_result.lua` looks for it there).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// `false` on the result of one run of a job that goes on (a recurring run): the job stays
    /// `RUNNING`. Absent (true) on a job's final result.
    #[serde(default = "yes", rename = "final", skip_serializing_if = "is_true")]
    pub is_final: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn empty_string() -> Value {
    Value::String(String::new())
}

fn empty_streams() -> Vec<String> {
    vec![String::new(), String::new()]
}

impl JobResult {
    /// A result with no output, for internal answers and errors; callers fill in the rest. A
    /// config job's result shows the keys of its `args.env`, not their values
    /// ([`crate::config_job::mask_env`]).
    pub fn new(
        id: &str,
        gid: u64,
        nid: u64,
        cmd: &str,
        mut args: Value,
        state: JobState,
    ) -> JobResult {
        if crate::config_job::is_config_job(id) {
            crate::config_job::mask_env(&mut args);
        }
        JobResult {
            id: id.to_owned(),
            gid,
            nid,
            cmd: cmd.to_owned(),
            args,
            data: empty_string(),
            level: 0,
            state,
            time: 0,
            starttime: crate::now_ms(),
            exit_code: None,
            streams: empty_streams(),
            critical: String::new(),
            run: 0,
            skipped: 0,
            is_final: true,
        }
    }

    /// An `ERROR` result whose `data` is a human-readable reason.
    pub fn error(
        id: &str,
        gid: u64,
        nid: u64,
        cmd: &str,
        args: Value,
        reason: impl Into<String>,
    ) -> JobResult {
        let mut r = JobResult::new(id, gid, nid, cmd, args, JobState::Error);
        r.data = Value::String(reason.into());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_serialize_upper_case() {
        assert_eq!(
            serde_json::to_string(&JobState::Timeout).unwrap(),
            "\"TIMEOUT\""
        );
        assert_eq!(
            serde_json::from_str::<JobState>("\"KILLED\"").unwrap(),
            JobState::Killed
        );
        assert!(serde_json::from_str::<JobState>("\"ok\"").is_err());
    }

    #[test]
    fn error_result_carries_reason() {
        let r = JobResult::error(
            "j",
            1,
            2,
            "execute",
            Value::Null,
            "executable not found: /nope",
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "ERROR");
        assert_eq!(v["data"], "executable not found: /nope");
        assert_eq!(v["streams"], serde_json::json!(["", ""]));
        assert_eq!(v["exit_code"], Value::Null);
        assert!(v.get("run").is_none() && v.get("final").is_none());
    }

    #[test]
    fn a_config_jobs_result_shows_its_env_keys_only() {
        let args = json!({"cmd": "x", "env": {"SECRET": "s3cret"}});
        let r = JobResult::new("cfg:1:2:x", 1, 2, "execute", args.clone(), JobState::Ok);
        assert_eq!(r.args["env"], json!({"SECRET": "***"}));
        let routed = JobResult::new("j", 1, 2, "execute", args.clone(), JobState::Ok);
        assert_eq!(routed.args, args);
    }

    #[test]
    fn a_run_of_a_job_that_goes_on_says_so() {
        let mut r = JobResult::new("j", 1, 2, "execute", Value::Null, JobState::Ok);
        r.run = 3;
        r.is_final = false;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (v["run"].clone(), v["final"].clone()),
            (json!(3), json!(false))
        );
        let back: JobResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
