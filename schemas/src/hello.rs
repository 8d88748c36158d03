//! What an agent says about itself on `POST /v1/agents/<gid>/<nid>/hello` (docs/protocol.md).

use serde::{Deserialize, Serialize};

/// Missing fields default to empty, so older or smaller agents still say hello.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hello {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub version: String,
    pub roles: Vec<String>,
    /// When the agent started, ms since the epoch.
    pub started: u64,
    /// The ids of the config-file jobs it started (`cfg:<gid>:<nid>:<id>`, from the `[[job]]`
    /// tables of its config), so their records exist before their first result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config_jobs: Vec<String>,
}
