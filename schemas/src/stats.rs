//! A stats batch (DESIGN §7): one flush of an agent's aggregated metrics.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsBatch {
    pub gid: u64,
    pub nid: u64,
    /// End of the flush interval, ms since the epoch.
    pub epoch: u64,
    /// Length of the flush interval in seconds.
    pub interval: f64,
    pub metrics: Vec<Metric>,
}

/// One aggregated metric; its values depend on its type (counter: `sum`, `rate`; gauge: `value`;
/// timer/histogram: `count`, `sum`, `min`, `max`, `mean`, `p50`, `p90`, `p99`; set: `count`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub values: Map<String, Value>,
}
