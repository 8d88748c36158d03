//! The agent registry in Redis: `agents` (last seen) and `agent:{g:n}` (facts from hello), and
//! the `role` lookups routing needs.

use redis::AsyncCommands;
pub use schemas::Hello;

use crate::intake::Invalid;
use crate::keys;
use crate::state::Shared;

/// A hello body, checked (a pure function: fuzzed).
pub fn parse_hello(body: &[u8]) -> Result<Hello, Invalid> {
    serde_json::from_slice(body).map_err(|e| Invalid::bad_request(format!("hello: {e}")))
}

/// What an agent's hello was answered: the roles it has (its token's) and what it claimed
/// beyond them.
pub struct Granted {
    pub roles: Vec<String>,
    pub warnings: Vec<String>,
}

/// Records an agent's facts. Its roles are those its token grants (`jsacc token add --roles`):
/// an agent cannot give itself a role, and role-routed commands (their `data` and `env`) go only
/// to agents an operator chose.
pub async fn hello(state: &Shared, agent_id: &str, hello: &Hello) -> redis::RedisResult<Granted> {
    let now = schemas::now_ms();
    let snapshot = state
        .tokens
        .snapshot(&mut state.conn(), crate::auth::CACHE_TTL)
        .await?;
    let granted = snapshot.roles(agent_id).to_vec();
    let beyond: Vec<&str> = hello
        .roles
        .iter()
        .filter(|r| !granted.contains(r))
        .map(String::as_str)
        .collect();
    let mut warnings = Vec::new();
    if !beyond.is_empty() {
        // Named in full only when few (the list comes from the agent).
        let mut named: String = beyond
            .iter()
            .take(10)
            .map(|r| clip(r))
            .collect::<Vec<_>>()
            .join(",");
        if beyond.len() > 10 {
            named.push_str(&format!(" and {} more", beyond.len() - 10));
        }
        warnings.push(format!(
            "roles {named} are not granted by this agent's token and are ignored (grant them with `jsacc token add --gid {} --roles …`)",
            agent_id.replace(':', " --nid "),
        ));
    }
    let roles = serde_json::to_string(&granted).unwrap_or_else(|_| "[]".into());
    redis::pipe()
        .hset_multiple(
            keys::agent(agent_id),
            &[
                ("hostname", clip(&hello.hostname)),
                ("os", clip(&hello.os)),
                ("arch", clip(&hello.arch)),
                ("version", clip(&hello.version)),
                ("roles", roles.as_str()),
                ("started", &hello.started.to_string()),
                ("last_seen", &now.to_string()),
            ],
        )
        .ignore()
        .zadd(keys::AGENTS, agent_id, now)
        .ignore()
        .exec_async(&mut state.conn())
        .await?;
    Ok(Granted {
        roles: granted,
        warnings,
    })
}

/// At most [`FACT_MAX`] bytes of a fact an agent reports (cut at a character boundary).
fn clip(fact: &str) -> &str {
    let mut end = fact.len().min(FACT_MAX);
    while !fact.is_char_boundary(end) {
        end -= 1;
    }
    &fact[..end]
}

/// Longest hostname, os, arch or version kept from a hello.
pub const FACT_MAX: usize = 256;

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

/// Live agents (seen within the live window) of grid `gid` whose token grants `role`.
pub async fn with_role(state: &Shared, gid: u64, role: &str) -> redis::RedisResult<Vec<String>> {
    let mut conn = state.conn();
    let since = schemas::now_ms().saturating_sub(state.config.live_window.as_millis() as u64);
    let live: Vec<String> = conn.zrangebyscore(keys::AGENTS, since, "+inf").await?;
    let snapshot = state
        .tokens
        .snapshot(&mut conn, crate::auth::CACHE_TTL)
        .await?;
    let prefix = format!("{gid}:");
    Ok(live
        .into_iter()
        .filter(|a| a.starts_with(&prefix) && snapshot.roles(a).iter().any(|r| r == role))
        .collect())
}
