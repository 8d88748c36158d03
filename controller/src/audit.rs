//! The audit trail (issue 13): every change of agent tokens and operator accounts — and, with
//! the HTTP API, every write made through it — is appended to the Redis stream `audit` with
//! who did it, what, when and from where. `jsctl audit` shows it.

use crate::keys;

/// Entries kept (`MAXLEN ~`): years of changes for most fleets, bounded for all.
pub const MAXLEN: usize = 100_000;

/// One change.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The account (or, from the command line, `cli:<os user>`).
    pub who: &'a str,
    /// What was done: `token add`, `user revoke`, …
    pub what: &'a str,
    /// What it was done to: `agent 1:5`, `account alice`, a job id, …
    pub target: &'a str,
    /// From where: a host name, or a peer address.
    pub from: &'a str,
}

/// Appends `entry`, with the time.
pub async fn record(
    conn: &mut impl redis::aio::ConnectionLike,
    entry: &Entry<'_>,
) -> redis::RedisResult<()> {
    redis::cmd("XADD")
        .arg(keys::AUDIT)
        .arg("MAXLEN")
        .arg("~")
        .arg(MAXLEN)
        .arg("*")
        .arg("who")
        .arg(entry.who)
        .arg("what")
        .arg(entry.what)
        .arg("target")
        .arg(entry.target)
        .arg("from")
        .arg(entry.from)
        .arg("time")
        .arg(schemas::now_ms())
        .query_async::<()>(conn)
        .await
}

/// Who runs this command line: `cli:<user>` (from `$USER`, else `$LOGNAME`, else `unknown`).
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// This host's name, for `from`.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
