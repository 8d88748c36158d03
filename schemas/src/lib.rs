//! The wire contract of jsacc (DESIGN.md §3): the messages that travel between clients, the
//! controller and the agents, as serde types.
//!
//! - [`command`]: a command as a client pushes it onto `cmds_queue`, and its validation.
//! - [`args`]: the typed `args` of each known command, so bad input is refused with a clear reason.
//! - [`config_job`]: the ids of config-file jobs (`cfg:<gid>:<nid>:<name>`), and their masked env.
//! - [`files`]: the `args` of the file transfer commands `put_file` and `get_file`.
//! - [`schedule`]: cron schedules (`args.cron`, `args.tz`): their validation and due times.
//! - [`result`]: the result an agent reports and the controller appends to `cmds_queue_<id>`.
//! - [`rollout`]: a fanout rolled out in batches (`batch`, `batch_wait`, `max_failures`).
//! - [`hello`]: what an agent says about itself when it connects.
//! - [`answer`]: the controller's answers to the agent's requests, and the job events it publishes.
//! - [`log`]: a log message as the agent stores and forwards it.
//! - [`output`]: the lines of a running job, as the agent forwards them (live output).
//! - [`stats`]: a flushed stats batch.
//! - [`info`]: the host facts answered by `get_os_info`, `get_cpu_info`, … .
//!
//! The JSON Schema files in `schemas/*.schema.json` describe the same documents for other languages;
//! the tests check that the example documents in `schemas/examples/` satisfy both.

pub mod answer;
pub mod args;
pub mod command;
pub mod config_job;
pub mod files;
pub mod hello;
pub mod info;
pub mod log;
pub mod output;
pub mod result;
pub mod rollout;
pub mod schedule;
pub mod stats;

pub use answer::{
    BatchAnswer, HelloAnswer, JobEvent, LogsAnswer, Rejected, RejectedBatch, StatsAnswer,
};
pub use args::{CommandKind, ExecuteArgs, InvalidArgs};
pub use command::{Command, CommandError, Target};
pub use files::{FileMode, GetFileArgs, PutFileArgs};
pub use hello::Hello;
pub use info::{CpuInfo, DiskInfo, MemInfo, NicInfo, OsInfo};
pub use log::LogMessage;
pub use output::{OutputAnswer, OutputBatch, OutputLine};
pub use result::{JobResult, JobState};
pub use rollout::{Amount, Plan, Rollout};
pub use schedule::{InvalidSchedule, Schedule};
pub use stats::{Metric, StatsBatch};

/// Milliseconds since the Unix epoch, the unit of every timestamp on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
