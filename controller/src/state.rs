//! What every request handler and background task shares: settings, Redis connections, the
//! Lua scripts, the token cache, parked polls and metrics. Only cloneable handles; no job state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use redis::Script;

use crate::agents::Seen;
use crate::auth::TokenCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::poll::Waiters;
use crate::redis_conn::{Conn, Redis};
use crate::target::Target;

/// The Lua scripts of `src/lua/`, each headed by its KEYS, ARGV and return value.
pub struct Scripts {
    pub create_job: Script,
    pub fail_job: Script,
    pub append_result: Script,
    pub take_batch: Script,
    pub poll: Script,
    pub record_result: Script,
    pub expire_waiting: Script,
    pub mark_running: Script,
    pub append_logs: Script,
    pub record_stats: Script,
}

impl Scripts {
    fn load() -> Scripts {
        Scripts {
            create_job: Script::new(include_str!("lua/create_job.lua")),
            fail_job: Script::new(include_str!("lua/fail_job.lua")),
            append_result: Script::new(include_str!("lua/append_result.lua")),
            take_batch: Script::new(include_str!("lua/take_batch.lua")),
            poll: Script::new(include_str!("lua/poll.lua")),
            record_result: Script::new(include_str!("lua/record_result.lua")),
            expire_waiting: Script::new(include_str!("lua/expire_waiting.lua")),
            mark_running: Script::new(include_str!("lua/mark_running.lua")),
            append_logs: Script::new(include_str!("lua/append_logs.lua")),
            record_stats: Script::new(include_str!("lua/record_stats.lua")),
        }
    }
}

pub struct Shared {
    pub config: Config,
    /// This process's instance id (names its routing list and liveness key).
    pub instance: String,
    pub redis: Redis,
    /// Multiplexed: concurrent requests on clones are pipelined on one socket.
    pub conn: Conn,
    /// The connection of writes that are confirmed with `WAIT` before they are acknowledged
    /// (results, logs, stats, routing): `WAIT` holds up the requests queued behind it on its
    /// connection, so reads and polls do not share this one.
    pub durable: Conn,
    pub scripts: Scripts,
    pub tokens: TokenCache,
    pub waiters: Waiters,
    pub seen: Seen,
    pub metrics: Metrics,
    /// Commands Redis refused, and how often (the router dead-letters them after a few tries).
    pub poison: Poison,
    /// Whether the router is routing (`/readyz` says when it is not).
    pub router: RouterHealth,
}

/// Failed tries per command (by the SHA-256 of its bytes), kept only until it is settled.
#[derive(Default)]
pub struct Poison {
    // A std mutex: never held across an `.await`.
    tries: Mutex<HashMap<[u8; 32], u32>>,
}

impl Poison {
    /// Counts one more failed try of `raw`; returns the count.
    pub fn tried(&self, raw: &[u8]) -> u32 {
        let mut tries = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        if tries.len() > 100_000 {
            tries.clear(); // only ever this large if something else is badly wrong
        }
        let n = tries.entry(Sha256::digest(raw).into()).or_insert(0);
        *n += 1;
        *n
    }

    pub fn forget(&self, raw: &[u8]) {
        let mut tries = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        if !tries.is_empty() {
            tries.remove(&<[u8; 32]>::from(Sha256::digest(raw)));
        }
    }
}

/// The router's last progress, for `/readyz`.
#[derive(Default)]
pub struct RouterHealth {
    running: AtomicBool,
    /// When the last routing step succeeded (ms since the epoch).
    last_ok: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// How long the router may go without a successful step before `/readyz` says it is stuck.
pub const ROUTER_STALL: Duration = Duration::from_secs(30);

impl RouterHealth {
    pub fn started(&self) {
        self.running.store(true, Ordering::Relaxed);
        self.last_ok.store(schemas::now_ms(), Ordering::Relaxed);
    }

    pub fn stepped(&self) {
        self.last_ok.store(schemas::now_ms(), Ordering::Relaxed);
    }

    pub fn failed(&self, e: &redis::RedisError) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }

    pub fn stopped(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    /// Why the router is not routing, if it is not.
    pub fn problem(&self) -> Option<String> {
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let error = error.unwrap_or_else(|| "no error recorded".into());
        if !self.running.load(Ordering::Relaxed) {
            return Some(format!("the router is not running (last error: {error})"));
        }
        let idle = schemas::now_ms().saturating_sub(self.last_ok.load(Ordering::Relaxed));
        (idle > ROUTER_STALL.as_millis() as u64).then(|| {
            format!(
                "the router has not completed a step for {} s (last error: {error})",
                idle / 1000
            )
        })
    }
}

pub type AppState = Arc<Shared>;

/// `WAIT` fell short: fewer replicas than `--redis-wait-replicas` confirmed a write in time.
/// The write may be lost in a failover, so it is not acknowledged (the caller retries).
pub fn not_replicated(wanted: usize) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
        NOT_REPLICATED,
        format!("fewer than {wanted} replica(s) confirmed the write in time"),
    ))
}

/// Whether `e` is [`not_replicated`].
pub fn is_not_replicated(e: &redis::RedisError) -> bool {
    e.to_string().contains(NOT_REPLICATED)
}

const NOT_REPLICATED: &str = "not replicated";

impl Shared {
    pub async fn connect(config: Config, redis: Redis) -> redis::RedisResult<AppState> {
        let conn = redis.connect(Duration::from_secs(5)).await?;
        let durable = redis
            .connect(Duration::from_secs(5) + config.wait_timeout)
            .await?;
        Ok(Arc::new(Shared {
            config,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            redis,
            conn,
            durable,
            scripts: Scripts::load(),
            tokens: TokenCache::default(),
            waiters: Waiters::default(),
            seen: Seen::default(),
            metrics: Metrics::default(),
            poison: Poison::default(),
            router: RouterHealth::default(),
        }))
    }

    /// A clone of the shared multiplexed connection.
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The connection for writes that [`Shared::confirm`] then waits for, pinned to the
    /// primary it reaches now (see [`Conn::pin`]).
    pub async fn durable(&self) -> redis::RedisResult<Conn> {
        self.durable.pin().await
    }

    /// Waits until `--redis-wait-replicas` replicas hold every write made so far on `conn` (from
    /// [`Shared::durable`]) to `keys`; an error when they do not within `--redis-wait-ms`.
    /// (`keys` only choose the primaries asked on a cluster; elsewhere `WAIT` covers every write.)
    pub async fn confirm(&self, conn: &mut Conn, keys: &[String]) -> redis::RedisResult<()> {
        let keys = [keys.to_vec()];
        if self.confirm_each(conn, &keys).await?[0] {
            Ok(())
        } else {
            Err(not_replicated(self.config.wait_replicas))
        }
    }

    /// Which of `writes` (the keys each piece of work wrote on `conn`) replicas confirmed; see
    /// [`Conn::confirm_each`]. Shortfalls are counted in the metrics.
    pub async fn confirm_each(
        &self,
        conn: &mut Conn,
        writes: &[Vec<String>],
    ) -> redis::RedisResult<Vec<bool>> {
        let (wanted, timeout) = (self.config.wait_replicas, self.config.wait_timeout);
        let confirmed = conn.confirm_each(wanted, timeout, writes).await?;
        if confirmed.iter().any(|ok| !ok) {
            self.metrics.not_replicated();
        }
        Ok(confirmed)
    }
}

/// Opens the `-r` target (`--redis-ca` for its TLS forms).
pub fn open_redis(text: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Redis> {
    let target = Target::parse(text)?;
    Redis::open(target, ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_are_counted_per_command_until_forgotten() {
        let p = Poison::default();
        assert_eq!((p.tried(b"a"), p.tried(b"a"), p.tried(b"b")), (1, 2, 1));
        p.forget(b"a");
        assert_eq!(p.tried(b"a"), 1);
    }

    #[test]
    fn a_router_that_stopped_or_stalled_is_reported() {
        let h = RouterHealth::default();
        assert!(h.problem().is_some_and(|p| p.contains("not running")));
        h.started();
        assert_eq!(h.problem(), None);
        h.failed(&not_replicated(1));
        let stalled = schemas::now_ms() - ROUTER_STALL.as_millis() as u64 - 1000;
        h.last_ok.store(stalled, Ordering::Relaxed);
        let problem = h.problem().expect("a stalled router");
        assert!(problem.contains("not completed a step") && problem.contains("not replicated"));
        h.stepped();
        assert_eq!(h.problem(), None);
        h.stopped();
        assert!(h.problem().is_some());
    }
}
