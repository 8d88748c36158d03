//! Live output (DESIGN §11): the lines a job prints, as the agent forwards them on
//! `POST /v1/agents/<gid>/<nid>/output` and the controller appends them to the Redis stream
//! `output:<id>` (fields `agent`, `fd`, `level`, `line`, `time`).

use serde::{Deserialize, Serialize};

/// Longest `line` the controller keeps whole, in bytes, its cut mark included: the agent cuts
/// longer lines to fit, and the controller cuts what still does not.
pub const MAX_LINE: usize = 64 << 10;

/// The level of a line that jsacc itself adds to a job's output (a cap marker): not a level of
/// the line protocol, so a client shows it as a note, never as the job's own text.
pub const MARKER_LEVEL: u8 = 0;

/// One line a job printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    /// 1 stdout, 2 stderr.
    pub fd: u8,
    /// Its level as the line protocol parsed it (1 or 2 for a plain line; the block's level for
    /// the lines of a multiline block, its opening and closing lines included);
    /// [`MARKER_LEVEL`] for a line jsacc added.
    pub level: u8,
    /// The line as printed, without its line break.
    pub line: String,
    /// When the agent read it, ms since the epoch.
    pub time: u64,
}

/// Lines of one job, forwarded together. `seq` increases with every batch an agent forwards
/// (for all its jobs, across its restarts), so the controller appends a batch posted again
/// after a lost answer only once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputBatch {
    /// The job id.
    pub id: String,
    pub seq: u64,
    pub lines: Vec<OutputLine>,
}

/// The answer to a posted array of output batches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputAnswer {
    /// Lines appended now.
    pub appended: usize,
    /// Batches appended by an earlier post.
    pub duplicates: usize,
    /// Lines not kept: the job's stream already holds `--output-maxlen` lines.
    pub capped: usize,
    /// Batches refused (an unknown job, a job not sent to this agent, a malformed batch);
    /// posting them again cannot succeed.
    pub rejected: Vec<crate::Rejected>,
    /// Jobs whose output the controller takes no more (their stream is capped, or the job is
    /// unknown or not this agent's): the agent stops forwarding their current runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}
