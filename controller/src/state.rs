//! What every request handler and background task shares: settings, Redis connections, the
//! Lua scripts, the token cache, parked polls and metrics. Only cloneable handles; no job state.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::agents::Seen;
use crate::auth::TokenCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::poll::Waiters;

/// The Lua scripts of `src/lua/`, each headed by its KEYS, ARGV and return value.
pub struct Scripts {
    pub create_job: Script,
    pub fail_job: Script,
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
    pub redis: redis::Client,
    /// Multiplexed: concurrent requests on clones are pipelined on one socket.
    pub conn: ConnectionManager,
    pub scripts: Scripts,
    pub tokens: TokenCache,
    pub waiters: Waiters,
    pub seen: Seen,
    pub metrics: Metrics,
}

pub type AppState = Arc<Shared>;

impl Shared {
    pub async fn connect(config: Config, redis: redis::Client) -> redis::RedisResult<AppState> {
        let conn = connection(&redis, Duration::from_secs(5)).await?;
        Ok(Arc::new(Shared {
            config,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            redis,
            conn,
            scripts: Scripts::load(),
            tokens: TokenCache::default(),
            waiters: Waiters::default(),
            seen: Seen::default(),
            metrics: Metrics::default(),
        }))
    }

    /// A clone of the shared multiplexed connection.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// A reconnecting connection whose requests may take up to `response_timeout`.
pub async fn connection(
    client: &redis::Client,
    response_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client.clone(), config).await
}

/// A Redis client for `url`; a `rediss://` server is checked against `ca` when given, else
/// against the system's trust store.
pub fn open_client(url: &str, ca: Option<&std::path::Path>) -> anyhow::Result<redis::Client> {
    use anyhow::Context;
    let Some(ca) = ca else {
        return redis::Client::open(url).with_context(|| format!("bad redis address {url}"));
    };
    let root_cert =
        std::fs::read(ca).with_context(|| format!("cannot read --redis-ca {}", ca.display()))?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    redis::Client::build_with_tls(url, certs)
        .with_context(|| format!("bad redis address or CA for {url}"))
}

/// Turns `host:port` into `redis://host:port`; URLs pass through.
pub fn redis_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    }
}
