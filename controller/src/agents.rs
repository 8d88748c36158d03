//! The agent registry in Redis: `agents` (last seen) and `agent:{g:n}` (facts from hello), and
//! the `role` lookups routing needs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncCommands;
pub use schemas::Hello;
use tokio::time::Instant;

use crate::keys;
use crate::state::Shared;

/// How often a polling agent's `last_seen` is written (polls are far more frequent).
const SEEN_EVERY: Duration = Duration::from_secs(5);

/// When each agent's `last_seen` was last written by this instance.
#[derive(Default)]
pub struct Seen {
    // A std mutex: never held across an `.await`.
    at: Mutex<HashMap<String, Instant>>,
}

impl Seen {
    fn due(&self, agent_id: &str) -> bool {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        match at.get(agent_id) {
            Some(t) if t.elapsed() < SEEN_EVERY => false,
            _ => {
                at.insert(agent_id.to_owned(), Instant::now());
                true
            }
        }
    }
}

pub async fn hello(state: &Shared, agent_id: &str, hello: &Hello) -> redis::RedisResult<()> {
    let now = schemas::now_ms();
    let roles = serde_json::to_string(&hello.roles).unwrap_or_else(|_| "[]".into());
    redis::pipe()
        .hset_multiple(
            keys::agent(agent_id),
            &[
                ("hostname", hello.hostname.as_str()),
                ("os", hello.os.as_str()),
                ("arch", hello.arch.as_str()),
                ("version", hello.version.as_str()),
                ("roles", roles.as_str()),
                ("started", &hello.started.to_string()),
                ("last_seen", &now.to_string()),
            ],
        )
        .ignore()
        .zadd(keys::AGENTS, agent_id, now)
        .ignore()
        .exec_async(&mut state.conn())
        .await
}

/// Records that an agent polled, at most every few seconds per agent.
pub async fn seen(state: &Shared, agent_id: &str) -> redis::RedisResult<()> {
    if !state.seen.due(agent_id) {
        return Ok(());
    }
    let now = schemas::now_ms();
    redis::pipe()
        .zadd(keys::AGENTS, agent_id, now)
        .ignore()
        .hset(keys::agent(agent_id), "last_seen", now)
        .ignore()
        .exec_async(&mut state.conn())
        .await
}

/// Live agents (seen within the live window) of grid `gid` that have `role`.
pub async fn with_role(state: &Shared, gid: u64, role: &str) -> redis::RedisResult<Vec<String>> {
    let mut conn = state.conn();
    let since = schemas::now_ms().saturating_sub(state.config.live_window.as_millis() as u64);
    let live: Vec<String> = conn.zrangebyscore(keys::AGENTS, since, "+inf").await?;
    let prefix = format!("{gid}:");
    let in_grid: Vec<String> = live
        .into_iter()
        .filter(|a| a.starts_with(&prefix))
        .collect();
    if in_grid.is_empty() {
        return Ok(vec![]);
    }
    let mut pipe = redis::pipe();
    for a in &in_grid {
        pipe.hget(keys::agent(a), "roles");
    }
    let roles: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
    Ok(in_grid
        .into_iter()
        .zip(roles)
        .filter(|(_, r)| {
            r.as_deref()
                .and_then(|r| serde_json::from_str::<Vec<String>>(r).ok())
                .is_some_and(|r| r.iter().any(|x| x == role))
        })
        .map(|(a, _)| a)
        .collect())
}
