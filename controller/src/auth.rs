//! Agent tokens: created by `jsacc token add`, stored only as SHA-256 hashes in `auth:agents`
//! with the roles they grant in `auth:roles`, and checked on every agent request against a
//! snapshot of both hashes held in memory.
//!
//! The snapshot is read with one `HGETALL` each when it is older than [`CACHE_TTL`], by one
//! request at a time (the others wait for it). A presented token is checked against the
//! snapshot only, so a stranger's guesses cost no memory and, at most every [`VERSION_EVERY`],
//! one `GET` of `auth:version`, however many paths they try: every `jsacc token add|revoke`
//! bumps that counter, and every check looks at it (read at most every [`VERSION_EVERY`] by an
//! instance, whatever its load) and reads the snapshot again when it moved. So a token added a
//! moment ago works at once, and a revoked or replaced one stops working within
//! [`VERSION_EVERY`], parked polls included (they check again before each look at their queue).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::keys;

/// How long a snapshot of the tokens is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// How often a token the snapshot does not know may make `auth:version` be read.
pub const VERSION_EVERY: Duration = Duration::from_millis(100);

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

/// Why a role name is refused by `jsacc token add --roles`.
pub fn check_role(role: &str) -> Result<(), String> {
    if role.is_empty() || role.len() > 64 {
        return Err(format!("role `{role}`: 1 to 64 characters"));
    }
    if !role
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "role `{role}`: only letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

/// Stores the hash of a new token for an agent (replacing its old one) with the roles it
/// grants, and returns the token. The roles are written first: an agent never holds a new
/// token with its old roles.
pub async fn add(
    conn: &mut impl redis::aio::ConnectionLike,
    gid: u64,
    nid: u64,
    roles: &[String],
) -> redis::RedisResult<String> {
    write_token(conn, &keys::agent_id(gid, nid), roles).await
}

/// Writes a new token for `agent`: its roles first, then its hash, then tells every controller;
/// returns the token.
async fn write_token(
    conn: &mut impl redis::aio::ConnectionLike,
    agent: &str,
    roles: &[String],
) -> redis::RedisResult<String> {
    let token = new_token();
    if roles.is_empty() {
        redis::cmd("HDEL")
            .arg(keys::AUTH_ROLES)
            .arg(agent)
            .query_async::<()>(conn)
            .await?;
    } else {
        let roles = serde_json::to_string(roles).unwrap_or_else(|_| "[]".into());
        redis::cmd("HSET")
            .arg(keys::AUTH_ROLES)
            .arg(agent)
            .arg(roles)
            .query_async::<()>(conn)
            .await?;
    }
    redis::cmd("HSET")
        .arg(keys::AUTH_AGENTS)
        .arg(agent)
        .arg(hash(&token))
        .query_async::<()>(conn)
        .await?;
    bump_version(conn).await?;
    Ok(token)
}

/// What [`claim`] writes into `auth:agents` while it sets the roles: not a SHA-256, so no token
/// matches it, yet the node id is taken.
const CLAIMED: &str = "claimed";

/// Stores a new token for an agent that has none (enrollment), and returns it; `None` when the
/// agent has a token. The node id is taken first (`HSETNX`, so of two concurrent claims one
/// wins), then the roles are written, then the token's hash: a snapshot read in between sees
/// the node taken but no token, never the token without its roles. A crash in between leaves
/// the node taken by no token: `jsacc token revoke` frees it.
pub async fn claim(
    conn: &mut impl redis::aio::ConnectionLike,
    gid: u64,
    nid: u64,
    roles: &[String],
) -> redis::RedisResult<Option<String>> {
    let agent = keys::agent_id(gid, nid);
    let taken: i64 = redis::cmd("HSETNX")
        .arg(keys::AUTH_AGENTS)
        .arg(&agent)
        .arg(CLAIMED)
        .query_async(conn)
        .await?;
    if taken == 0 {
        return Ok(None);
    }
    write_token(conn, &agent, roles).await.map(Some)
}

/// Tells every controller that the tokens changed.
async fn bump_version(conn: &mut impl redis::aio::ConnectionLike) -> redis::RedisResult<()> {
    redis::cmd("INCR")
        .arg(keys::AUTH_VERSION)
        .query_async::<()>(conn)
        .await
}

/// Removes an agent's token (and its roles); returns whether it had one.
pub async fn revoke(
    conn: &mut impl redis::aio::ConnectionLike,
    gid: u64,
    nid: u64,
) -> redis::RedisResult<bool> {
    let agent = keys::agent_id(gid, nid);
    let removed: i64 = redis::cmd("HDEL")
        .arg(keys::AUTH_AGENTS)
        .arg(&agent)
        .query_async(conn)
        .await?;
    redis::cmd("HDEL")
        .arg(keys::AUTH_ROLES)
        .arg(&agent)
        .query_async::<()>(conn)
        .await?;
    bump_version(conn).await?;
    Ok(removed > 0)
}

/// `auth:agents` and `auth:roles` as read at one moment.
#[derive(Default)]
pub struct Snapshot {
    /// `auth:version` when they were read.
    version: Option<i64>,
    /// "gid:nid" → token hash.
    hashes: HashMap<String, String>,
    /// Every token hash (to tell a token of another agent, 403, from no token, 401).
    all: HashSet<String>,
    /// "gid:nid" → the roles its token grants.
    roles: HashMap<String, Vec<String>>,
}

impl Snapshot {
    fn verdict(&self, agent_id: &str, presented: &str) -> Verdict {
        if self.hashes.get(agent_id).map(String::as_str) == Some(presented) {
            Verdict::Allowed
        } else if self.all.contains(presented) {
            Verdict::OtherAgent
        } else {
            Verdict::Invalid
        }
    }

    /// The roles an agent's token grants (none when it has no token).
    pub fn roles(&self, agent_id: &str) -> &[String] {
        match self.hashes.contains_key(agent_id) {
            true => self.roles.get(agent_id).map(Vec::as_slice).unwrap_or(&[]),
            false => &[],
        }
    }

    pub fn has_token(&self, agent_id: &str) -> bool {
        self.hashes.contains_key(agent_id)
    }
}

/// `auth:version` as last read, and when.
type LastLook = RwLock<Option<(Option<i64>, Instant)>>;

/// The snapshot and when it was read.
#[derive(Default)]
pub struct TokenCache {
    // std locks: never held across an `.await`.
    current: RwLock<Option<(Arc<Snapshot>, Instant)>>,
    /// `auth:version` as last read for a token the snapshot allows, and when.
    version_for_known: LastLook,
    /// The same for any other token (a stranger's guesses share this one).
    version_for_unknown: LastLook,
    /// One reader of Redis at a time; the others wait and use what it read.
    refreshing: tokio::sync::Mutex<()>,
}

impl TokenCache {
    /// Checks `token` for the agent `agent_id` ("gid:nid").
    pub async fn verify(
        &self,
        conn: &mut crate::redis_conn::Conn,
        agent_id: &str,
        token: &str,
    ) -> redis::RedisResult<Verdict> {
        self.verify_hash(conn, agent_id, &hash(token)).await
    }

    /// [`TokenCache::verify`] with the token's hash.
    pub async fn verify_hash(
        &self,
        conn: &mut crate::redis_conn::Conn,
        agent_id: &str,
        presented: &str,
    ) -> redis::RedisResult<Verdict> {
        let snapshot = self.snapshot(conn, CACHE_TTL).await?;
        // Added, revoked or replaced since the snapshot was read: `auth:version` moved. Tokens
        // the snapshot allows and the others look at it apart, so a stream of known agents'
        // requests never keeps a token added a moment ago waiting for the next look.
        let held = snapshot.verdict(agent_id, presented);
        let looked = match held {
            Verdict::Allowed => &self.version_for_known,
            _ => &self.version_for_unknown,
        };
        Ok(self
            .newer(conn, &snapshot, looked)
            .await?
            .map_or(held, |s| s.verdict(agent_id, presented)))
    }

    /// A snapshot read again if `auth:version` moved since `held` was read (looked at no more
    /// than every [`VERSION_EVERY`]); `None` when it did not.
    async fn newer(
        &self,
        conn: &mut crate::redis_conn::Conn,
        held: &Snapshot,
        looked: &LastLook,
    ) -> redis::RedisResult<Option<Arc<Snapshot>>> {
        let version = self.version(conn, looked).await?;
        if version == held.version {
            return Ok(None);
        }
        {
            // Another request may have read it meanwhile.
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if let Some((s, _)) = current.as_ref().filter(|(s, _)| s.version >= version) {
                return Ok(Some(s.clone()));
            }
        }
        Ok(Some(self.read(conn, Some(version)).await?))
    }

    /// `auth:version`, read at most every [`VERSION_EVERY`].
    async fn version(
        &self,
        conn: &mut crate::redis_conn::Conn,
        looked: &LastLook,
    ) -> redis::RedisResult<Option<i64>> {
        let cached = |max_age: Duration| {
            let version = looked.read().unwrap_or_else(|e| e.into_inner());
            version
                .as_ref()
                .filter(|(_, at)| at.elapsed() < max_age)
                .map(|(v, _)| *v)
        };
        if let Some(v) = cached(VERSION_EVERY) {
            return Ok(v);
        }
        let _reading = self.refreshing.lock().await;
        if let Some(v) = cached(VERSION_EVERY) {
            return Ok(v);
        }
        let v: Option<i64> = redis::cmd("GET")
            .arg(keys::AUTH_VERSION)
            .query_async(conn)
            .await?;
        *looked.write().unwrap_or_else(|e| e.into_inner()) = Some((v, Instant::now()));
        Ok(v)
    }

    /// Whether the agent has a token at all (commands for agents without one end `ERROR`).
    /// For the router: commands come from trusted pushers, so an agent the snapshot does not
    /// know is looked up in Redis (a token added a moment before its first command counts).
    pub async fn has_token(
        &self,
        conn: &mut crate::redis_conn::Conn,
        agent_id: &str,
    ) -> redis::RedisResult<bool> {
        if self.snapshot(conn, CACHE_TTL).await?.has_token(agent_id) {
            return Ok(true);
        }
        redis::cmd("HEXISTS")
            .arg(keys::AUTH_AGENTS)
            .arg(agent_id)
            .query_async(conn)
            .await
    }

    /// A snapshot no older than `max_age`, read from Redis if the held one is older.
    pub async fn snapshot(
        &self,
        conn: &mut crate::redis_conn::Conn,
        max_age: Duration,
    ) -> redis::RedisResult<Arc<Snapshot>> {
        if let Some(s) = self.fresh(max_age) {
            return Ok(s);
        }
        self.read(conn, None).await
    }

    /// Reads the snapshot from Redis, unless the request this one waited for read one that is
    /// recent enough (within [`CACHE_TTL`], and of `version` or later when one is given).
    async fn read(
        &self,
        conn: &mut crate::redis_conn::Conn,
        version: Option<Option<i64>>,
    ) -> redis::RedisResult<Arc<Snapshot>> {
        let _reading = self.refreshing.lock().await;
        if let Some(s) = self.fresh(CACHE_TTL) {
            if version.is_none_or(|v| s.version >= v) {
                return Ok(s); // read by the request we waited for
            }
        }
        let started = Instant::now();
        // The version first: a change made while the hashes are read shows as a newer one.
        let (version, hashes, roles): (
            Option<i64>,
            HashMap<String, String>,
            HashMap<String, String>,
        ) = redis::pipe()
            .cmd("GET")
            .arg(keys::AUTH_VERSION)
            .cmd("HGETALL")
            .arg(keys::AUTH_AGENTS)
            .cmd("HGETALL")
            .arg(keys::AUTH_ROLES)
            .query_async(conn)
            .await?;
        let snapshot = Arc::new(Snapshot {
            version,
            all: hashes.values().cloned().collect(),
            hashes,
            roles: roles
                .into_iter()
                .filter_map(|(a, r)| Some((a, serde_json::from_str(&r).ok()?)))
                .collect(),
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Some((snapshot.clone(), started));
        Ok(snapshot)
    }

    fn fresh(&self, max_age: Duration) -> Option<Arc<Snapshot>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|(_, at)| at.elapsed() < max_age)
            .map(|(s, _)| s.clone())
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

    #[test]
    fn a_snapshot_tells_own_other_and_unknown_tokens_apart() {
        let mut s = Snapshot::default();
        s.hashes.insert("1:1".into(), hash("a"));
        s.hashes.insert("1:2".into(), hash("b"));
        s.all = s.hashes.values().cloned().collect();
        s.roles.insert("1:1".into(), vec!["web".into()]);
        s.roles.insert("9:9".into(), vec!["stale".into()]);
        assert_eq!(s.verdict("1:1", &hash("a")), Verdict::Allowed);
        assert_eq!(s.verdict("1:2", &hash("a")), Verdict::OtherAgent);
        assert_eq!(s.verdict("1:3", &hash("a")), Verdict::OtherAgent);
        assert_eq!(s.verdict("1:1", &hash("zz")), Verdict::Invalid);
        assert_eq!(s.roles("1:1"), ["web".to_owned()]);
        assert!(s.roles("1:2").is_empty());
        // Roles left behind by a revoked token grant nothing.
        assert!(s.roles("9:9").is_empty());
    }

    #[tokio::test]
    async fn a_revoked_or_replaced_token_is_refused_without_waiting_for_the_snapshot() {
        let server = crate::testkit::RedisServer::start();
        let state = crate::testkit::state(&server, crate::config::Config::default()).await;
        let mut conn = state.conn();
        let old = add(&mut conn, 1, 1, &[]).await.expect("add");
        let cache = TokenCache::default();
        let verdict = cache.verify(&mut conn, "1:1", &old).await.expect("verify");
        assert_eq!(verdict, Verdict::Allowed);
        // A token added right after a known agent's request works at once: that request's look
        // at `auth:version` is not the one a token the snapshot does not know waits for.
        let other = add(&mut conn, 1, 2, &[]).await.expect("add 1:2");
        let verdict = cache
            .verify(&mut conn, "1:2", &other)
            .await
            .expect("verify");
        assert_eq!(verdict, Verdict::Allowed, "a token added a moment ago");
        // Replaced, then revoked: the snapshot read above is trusted for CACHE_TTL (5 s), but
        // `auth:version` moved, and is looked at again once VERSION_EVERY has passed.
        let new = add(&mut conn, 1, 1, &[]).await.expect("add again");
        tokio::time::sleep(VERSION_EVERY * 2).await;
        let verdict = cache.verify(&mut conn, "1:1", &old).await.expect("verify");
        assert_eq!(verdict, Verdict::Invalid, "the replaced token");
        let verdict = cache.verify(&mut conn, "1:1", &new).await.expect("verify");
        assert_eq!(verdict, Verdict::Allowed, "its replacement");
        assert!(revoke(&mut conn, 1, 1).await.expect("revoke"));
        tokio::time::sleep(VERSION_EVERY * 2).await;
        let verdict = cache.verify(&mut conn, "1:1", &new).await.expect("verify");
        assert_eq!(verdict, Verdict::Invalid, "the revoked token");
    }

    #[test]
    fn role_names_are_checked() {
        assert!(check_role("web-1.eu_west").is_ok());
        for bad in ["", "a b", "a,b", "x{y}", &"r".repeat(65)] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
    }
}
