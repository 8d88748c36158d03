//! Agent tokens: created by `jsacc token add`, stored only as SHA-256 hashes in `auth:agents`,
//! checked on every agent request through a short-lived cache so a poll costs no extra Redis
//! round trip. A revoked token stops working within [`CACHE_TTL`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use rand::RngCore;
use redis::AsyncCommands;
use sha2::{Digest, Sha256};

use crate::keys;

/// How long a looked-up token hash is trusted before Redis is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// What a presented token is, for one agent's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The token of this path's agent.
    Allowed,
    /// A valid token, of another agent.
    OtherAgent,
    /// Not a valid token (or the agent has none).
    Invalid,
}

/// A new random token: 32 bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("jsa_{}", hex::encode(bytes))
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Stores the hash of a new token for an agent (replacing its old one) and returns the token.
pub async fn add(
    conn: &mut impl redis::aio::ConnectionLike,
    gid: u64,
    nid: u64,
) -> redis::RedisResult<String> {
    let token = new_token();
    redis::cmd("HSET")
        .arg(keys::AUTH_AGENTS)
        .arg(keys::agent_id(gid, nid))
        .arg(hash(&token))
        .query_async::<()>(conn)
        .await?;
    Ok(token)
}

/// Removes an agent's token; returns whether it had one.
pub async fn revoke(
    conn: &mut impl redis::aio::ConnectionLike,
    gid: u64,
    nid: u64,
) -> redis::RedisResult<bool> {
    let removed: i64 = redis::cmd("HDEL")
        .arg(keys::AUTH_AGENTS)
        .arg(keys::agent_id(gid, nid))
        .query_async(conn)
        .await?;
    Ok(removed > 0)
}

/// Token hashes as last read from Redis: per agent, and all of them (to tell a token of
/// another agent, 403, from no token at all, 401, without reading the whole hash per request).
#[derive(Default)]
pub struct TokenCache {
    // std mutexes: never held across an `.await`.
    entries: Mutex<HashMap<String, (Option<String>, Instant)>>,
    all: Mutex<Option<(Arc<HashSet<String>>, Instant)>>,
}

impl TokenCache {
    /// Checks `token` for the agent `agent_id` ("gid:nid").
    pub async fn verify(
        &self,
        conn: &mut crate::redis_conn::Conn,
        agent_id: &str,
        token: &str,
    ) -> redis::RedisResult<Verdict> {
        let presented = hash(token);
        if self.expected(conn, agent_id).await?.as_deref() == Some(presented.as_str()) {
            return Ok(Verdict::Allowed);
        }
        Ok(if self.all_hashes(conn).await?.contains(&presented) {
            Verdict::OtherAgent
        } else {
            Verdict::Invalid
        })
    }

    /// Whether the agent has a token at all (commands for agents without one end `ERROR`).
    pub async fn has_token(
        &self,
        conn: &mut crate::redis_conn::Conn,
        agent_id: &str,
    ) -> redis::RedisResult<bool> {
        Ok(self.expected(conn, agent_id).await?.is_some())
    }

    /// The agent's token hash, from the cache or Redis.
    async fn expected(
        &self,
        conn: &mut crate::redis_conn::Conn,
        agent_id: &str,
    ) -> redis::RedisResult<Option<String>> {
        if let Some(h) = self.cached(agent_id) {
            return Ok(h);
        }
        let h: Option<String> = conn.hget(keys::AUTH_AGENTS, agent_id).await?;
        self.store(agent_id, h.clone());
        Ok(h)
    }

    /// Every agent's token hash, read from Redis at most once per [`CACHE_TTL`].
    async fn all_hashes(
        &self,
        conn: &mut crate::redis_conn::Conn,
    ) -> redis::RedisResult<Arc<HashSet<String>>> {
        {
            let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((set, _)) = all.as_ref().filter(|(_, at)| at.elapsed() < CACHE_TTL) {
                return Ok(set.clone());
            }
        }
        let map: HashMap<String, String> = conn.hgetall(keys::AUTH_AGENTS).await?;
        let set = Arc::new(map.into_values().collect::<HashSet<_>>());
        *self.all.lock().unwrap_or_else(|e| e.into_inner()) = Some((set.clone(), Instant::now()));
        Ok(set)
    }

    fn cached(&self, agent_id: &str) -> Option<Option<String>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(agent_id)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(h, _)| h.clone())
    }

    fn store(&self, agent_id: &str, h: Option<String>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > 100_000 {
            entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        entries.insert(agent_id.to_owned(), (h, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("jsa_") && a.len() == 4 + 64);
        assert_eq!(hash(&a), hash(&a));
        assert_eq!(hash("x").len(), 64);
    }
}
