//! A log message (DESIGN §3): one parsed line or block of a job's output, as the agent stores it
//! and forwards it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    /// Per-agent increasing id that survives agent restarts and log rotation.
    pub id: u64,
    pub jobid: String,
    pub domain: String,
    pub name: String,
    /// ms since the epoch.
    pub epoch: u64,
    pub level: u8,
    pub data: String,
}
