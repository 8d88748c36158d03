//! Enrollment codes (issue 14): `jsacc enroll create` makes a one-time code for a grid (and
//! perhaps a node id and roles); a new machine trades it once for an agent token with
//! `POST /v1/enroll` (`jsagent enroll`). Only the code's SHA-256 is stored, in the hash
//! `auth:enroll`, with what it grants, how many uses it has left and when it expires.
//!
//! A use is taken atomically (`lua/redeem_enroll.lua`); the node id is then taken with
//! [`auth::claim`] (`HSETNX`), so two machines enrolling at once never get the same one. A used-up
//! code stays until it expires (so it is answered "already used", not "unknown"); expired
//! records are deleted whenever codes are created, listed or revoked, and an expired code
//! offered for redemption deletes its own record (redemption, open to strangers, does not
//! read the whole hash).
//!
//! A node id the code does not name is taken from a per-grid counter that never goes back
//! ([`keys::AUTH_ENROLL_NIDS`]): a revoked node's identity is never handed to a new machine.

use std::sync::LazyLock;
use std::time::Duration;

use rand::RngCore;
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::{auth, keys};

/// Lifetime of a code unless `--ttl` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Longest lifetime of a code.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Most uses of one code.
pub const MAX_USES: u32 = 1000;
/// Most live codes at once (bounds `auth:enroll`).
pub const MAX_CODES: usize = 10_000;
/// Hex digits of a code's hash shown by `jsacc enroll list` and taken by `revoke`.
pub const PREFIX_LEN: usize = 12;
/// Shortest prefix `jsacc enroll revoke` accepts.
pub const MIN_PREFIX: usize = 6;
/// Node ids tried after the first free-looking one when others enroll at the same moment.
const NID_TRIES: usize = 64;

static REDEEM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/redeem_enroll.lua")));

/// What a code grants, as stored (`uses` first: the redeem script rewrites only it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Uses left.
    pub uses: u32,
    pub gid: u64,
    /// The node id it enrolls; without one, one the grid has not handed out before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nid: Option<u64>,
    pub roles: Vec<String>,
    /// When it stops working, ms since the epoch.
    pub expires: u64,
    /// When it was made, ms since the epoch.
    pub created: u64,
}

/// A live code as `jsacc enroll list` shows it: never the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The first [`PREFIX_LEN`] hex digits of the code's SHA-256.
    pub prefix: String,
    pub record: Record,
}

/// What a redeemed code gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub gid: u64,
    pub nid: u64,
    pub roles: Vec<String>,
    pub token: String,
    /// The hash prefix of the code used (for the audit trail).
    pub code_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("unknown enrollment code")]
    Unknown,
    #[error("enrollment code expired: ask for a new one (jsacc enroll create)")]
    Expired,
    #[error("enrollment code already used: ask for a new one (jsacc enroll create)")]
    Used,
    #[error("this enrollment code is for node {code}, not {asked}")]
    OtherNid { code: u64, asked: u64 },
    #[error("agent {0} already has a token: revoke it first (jsacc token revoke --gid G --nid N)")]
    Enrolled(String),
    #[error("no free node id in grid {0} near the highest one; give a node id")]
    NoFreeNid(u64),
    #[error("{0} live enrollment codes: revoke some or wait for them to expire")]
    TooMany(usize),
    #[error("no live enrollment code whose hash starts with `{0}`")]
    NoSuchPrefix(String),
    #[error("several enrollment codes' hashes start with `{0}`: give more of it")]
    Ambiguous(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A new random code: `jse_` and 20 bytes from the OS's CSPRNG (via `rand`), hex.
pub fn new_code() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("jse_{}", hex::encode(bytes))
}

/// What [`create`] is asked for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub gid: u64,
    pub nid: Option<u64>,
    pub roles: Vec<String>,
    /// Lifetime (1 s to [`MAX_TTL`]).
    pub ttl: Duration,
    /// 1 to [`MAX_USES`].
    pub uses: u32,
}

/// Stores a new code granting `grant` and returns it (shown only then); `now` in ms.
pub async fn create(
    conn: &mut impl redis::aio::ConnectionLike,
    grant: &Grant,
    now: u64,
) -> Result<String, EnrollError> {
    let live = prune(conn, now).await?;
    if live.len() >= MAX_CODES {
        return Err(EnrollError::TooMany(live.len()));
    }
    let code = new_code();
    let ttl = grant.ttl.clamp(Duration::from_secs(1), MAX_TTL);
    let record = Record {
        uses: grant.uses.clamp(1, MAX_USES),
        gid: grant.gid,
        nid: grant.nid,
        roles: grant.roles.clone(),
        expires: now.saturating_add(ttl.as_millis() as u64),
        created: now,
    };
    let json = serde_json::to_string(&record).unwrap_or_default();
    redis::cmd("HSET")
        .arg(keys::AUTH_ENROLL)
        .arg(auth::hash(&code))
        .arg(json)
        .query_async::<()>(conn)
        .await?;
    Ok(code)
}

/// The live codes (with uses left or not), oldest first; expired ones are deleted.
pub async fn list(
    conn: &mut impl redis::aio::ConnectionLike,
    now: u64,
) -> redis::RedisResult<Vec<Listed>> {
    let mut live: Vec<Listed> = prune(conn, now)
        .await?
        .into_iter()
        .map(|(hash, record)| Listed {
            prefix: hash[..PREFIX_LEN.min(hash.len())].to_owned(),
            record,
        })
        .collect();
    live.sort_by_key(|l| (l.record.created, l.prefix.clone()));
    Ok(live)
}

/// Deletes the one live code whose hash starts with `prefix` (at least [`MIN_PREFIX`] hex
/// digits, as `list` shows them) and returns it.
pub async fn revoke(
    conn: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
    now: u64,
) -> Result<Listed, EnrollError> {
    let prefix = prefix.to_ascii_lowercase();
    let mut matching: Vec<(String, Record)> = prune(conn, now)
        .await?
        .into_iter()
        .filter(|(hash, _)| hash.starts_with(&prefix))
        .collect();
    let (hash, record) = match matching.len() {
        0 => return Err(EnrollError::NoSuchPrefix(prefix)),
        1 => matching.remove(0),
        _ => return Err(EnrollError::Ambiguous(prefix)),
    };
    redis::cmd("HDEL")
        .arg(keys::AUTH_ENROLL)
        .arg(&hash)
        .query_async::<()>(conn)
        .await?;
    Ok(Listed {
        prefix: hash[..PREFIX_LEN].to_owned(),
        record,
    })
}

/// Why a `revoke` prefix is refused.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    match prefix.len() >= MIN_PREFIX
        && prefix.len() <= 64
        && prefix.chars().all(|c| c.is_ascii_hexdigit())
    {
        true => Ok(()),
        false => Err(format!(
            "code prefix `{prefix}`: {MIN_PREFIX} to 64 hex digits, as `jsacc enroll list` shows"
        )),
    }
}

/// Every record of `auth:enroll` that has not expired by `now`, by code hash; the expired and
/// the unreadable ones are deleted.
async fn prune(
    conn: &mut impl redis::aio::ConnectionLike,
    now: u64,
) -> redis::RedisResult<Vec<(String, Record)>> {
    let all: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(keys::AUTH_ENROLL)
        .query_async(conn)
        .await?;
    let (mut live, mut dead) = (Vec::new(), Vec::new());
    for (hash, json) in all {
        match serde_json::from_str::<Record>(&json) {
            Ok(record) if record.expires > now => live.push((hash, record)),
            _ => dead.push(hash),
        }
    }
    if !dead.is_empty() {
        redis::cmd("HDEL")
            .arg(keys::AUTH_ENROLL)
            .arg(&dead)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(live)
}

/// Which node a redemption enrolls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Fixed(u64),
    NextFree,
}

/// Trades one use of `code` for a new agent token. `asked` is the node id the machine asks for
/// (refused when the code names another); `now` in ms.
pub async fn redeem(
    conn: &mut impl redis::aio::ConnectionLike,
    code: &str,
    asked: Option<u64>,
    now: u64,
) -> Result<Enrolled, EnrollError> {
    let hash = auth::hash(code);
    // A first look, so that a code for a node that already has a token is refused without
    // spending a use (the operator revokes the token and the same code works).
    let peeked: Option<String> = redis::cmd("HGET")
        .arg(keys::AUTH_ENROLL)
        .arg(&hash)
        .query_async(conn)
        .await?;
    let record = parse(peeked.as_deref())?;
    if record.expires <= now || record.uses == 0 {
        // The script tells which (and deletes an expired record).
        take_use(conn, &hash, now).await?;
        return Err(EnrollError::Used);
    }
    let node = match (record.nid, asked) {
        (Some(code), Some(asked)) if code != asked => {
            return Err(EnrollError::OtherNid { code, asked })
        }
        (Some(nid), _) | (None, Some(nid)) => Node::Fixed(nid),
        (None, None) => Node::NextFree,
    };
    if let Node::Fixed(nid) = node {
        if has_token(conn, record.gid, nid).await? {
            return Err(EnrollError::Enrolled(keys::agent_id(record.gid, nid)));
        }
    }
    let record = take_use(conn, &hash, now).await?;
    let (nid, token) = match node {
        Node::Fixed(nid) => match auth::claim(conn, record.gid, nid, &record.roles).await? {
            Some(token) => (nid, token),
            // Taken since the first look: this use is spent.
            None => return Err(EnrollError::Enrolled(keys::agent_id(record.gid, nid))),
        },
        Node::NextFree => claim_next(conn, record.gid, &record.roles).await?,
    };
    Ok(Enrolled {
        gid: record.gid,
        nid,
        roles: record.roles,
        token,
        code_prefix: hash[..PREFIX_LEN].to_owned(),
    })
}

/// A record as read by a first look (`None`: no such code).
fn parse(json: Option<&str>) -> Result<Record, EnrollError> {
    let json = json.ok_or(EnrollError::Unknown)?;
    // A record this module did not write counts as no code.
    serde_json::from_str(json).map_err(|_| EnrollError::Unknown)
}

/// Takes one use of the code whose hash is `hash`, atomically; returns its record.
async fn take_use(
    conn: &mut impl redis::aio::ConnectionLike,
    hash: &str,
    now: u64,
) -> Result<Record, EnrollError> {
    let answer: Vec<String> = REDEEM
        .key(keys::AUTH_ENROLL)
        .arg(hash)
        .arg(now)
        .invoke_async(conn)
        .await?;
    match answer.first().map(String::as_str) {
        Some("ok") => parse(answer.get(1).map(String::as_str)),
        Some("expired") => Err(EnrollError::Expired),
        Some("used") => Err(EnrollError::Used),
        _ => Err(EnrollError::Unknown),
    }
}

async fn has_token(
    conn: &mut impl redis::aio::ConnectionLike,
    gid: u64,
    nid: u64,
) -> redis::RedisResult<bool> {
    redis::cmd("HEXISTS")
        .arg(keys::AUTH_AGENTS)
        .arg(keys::agent_id(gid, nid))
        .query_async(conn)
        .await
}

/// Claims a node id of grid `gid` never handed out before: the grid's counter in
/// [`keys::AUTH_ENROLL_NIDS`] goes up by one (`HINCRBY`, so each caller gets its own number, and
/// it never goes back: a revoked node's id is not given again), and never below one above the
/// highest node id that has a token (1 in an empty grid). A number some other node took
/// meanwhile (a code or a machine that named it) is skipped.
async fn claim_next(
    conn: &mut impl redis::aio::ConnectionLike,
    gid: u64,
    roles: &[String],
) -> Result<(u64, String), EnrollError> {
    let agents: Vec<String> = redis::cmd("HKEYS")
        .arg(keys::AUTH_AGENTS)
        .query_async(conn)
        .await?;
    let first = next_free(gid, agents.iter().map(String::as_str));
    for _ in 0..NID_TRIES {
        let mut nid = next_counted(conn, gid, 1).await?;
        if nid < first {
            // Raised to `first` at least; each HINCRBY's answer is its caller's alone.
            nid = next_counted(conn, gid, first - nid).await?;
        }
        if let Some(token) = auth::claim(conn, gid, nid, roles).await? {
            return Ok((nid, token));
        }
    }
    Err(EnrollError::NoFreeNid(gid))
}

/// Raises grid `gid`'s counter of handed-out node ids by `by`; its new value.
async fn next_counted(
    conn: &mut impl redis::aio::ConnectionLike,
    gid: u64,
    by: u64,
) -> Result<u64, EnrollError> {
    let n: i64 = redis::cmd("HINCRBY")
        .arg(keys::AUTH_ENROLL_NIDS)
        .arg(gid)
        .arg(by.min(i64::MAX as u64))
        .query_async(conn)
        .await?;
    u64::try_from(n).map_err(|_| EnrollError::NoFreeNid(gid))
}

/// One above the highest node id of grid `gid` among `agents` ("gid:nid"), 1 when it has none.
fn next_free<'a>(gid: u64, agents: impl Iterator<Item = &'a str>) -> u64 {
    agents
        .filter_map(|a| {
            let (g, n) = a.split_once(':')?;
            (g.parse::<u64>().ok()? == gid).then(|| n.parse::<u64>().ok())?
        })
        .max()
        .map_or(1, |n| n.saturating_add(1))
}

#[cfg(test)]
mod tests;
