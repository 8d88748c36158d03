//! What every request handler and background task shares: settings, Redis connections, the
//! Lua scripts, the token cache, parked polls and metrics. Only cloneable handles; no job state.
//! It imports only modules that import neither it nor the HTTP layer.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use crate::auth::TokenCache;
use crate::config::Config;
use crate::local::{Poison, RouterHealth, Seen, Waiters};
use crate::metrics::Metrics;
use crate::redis_conn::{not_replicated, Conn, Redis};
use crate::target::Target;

/// The Lua scripts of `src/lua/`, each headed by its KEYS, ARGV and return value.
pub struct Scripts {
    pub create_job: Script,
    pub fail_job: Script,
    pub append_result: Script,
    pub take_batch: Script,
    pub poll: Script,
    pub record_result: Script,
    /// `record_result.lua` and `append_result.lua` as one script (`record_and_append.lua`).
    pub record_and_append: Script,
    pub expire_waiting: Script,
    pub mark_running: Script,
    pub append_logs: Script,
    pub append_output: Script,
    pub record_stats: Script,
    pub open_config_job: Script,
    pub declare_config_job: Script,
    pub admit_config_job: Script,
    pub rollout_step: Script,
    pub rollout_mark: Script,
    pub rollout_stop: Script,
    pub rollout_claim: Script,
    pub rollout_unclaim: Script,
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
            record_and_append: Script::new(&format!(
                "local function record_result(KEYS, ARGV)\n{}\nend\n\
                 local function append_result(KEYS, ARGV)\n{}\nend\n{}",
                include_str!("lua/record_result.lua"),
                include_str!("lua/append_result.lua"),
                include_str!("lua/record_and_append.lua"),
            )),
            expire_waiting: Script::new(include_str!("lua/expire_waiting.lua")),
            mark_running: Script::new(include_str!("lua/mark_running.lua")),
            append_logs: Script::new(include_str!("lua/append_logs.lua")),
            append_output: Script::new(include_str!("lua/append_output.lua")),
            record_stats: Script::new(include_str!("lua/record_stats.lua")),
            open_config_job: Script::new(include_str!("lua/open_config_job.lua")),
            declare_config_job: Script::new(include_str!("lua/declare_config_job.lua")),
            admit_config_job: Script::new(include_str!("lua/admit_config_job.lua")),
            rollout_step: Script::new(include_str!("lua/rollout_step.lua")),
            rollout_mark: Script::new(include_str!("lua/rollout_mark.lua")),
            rollout_stop: Script::new(include_str!("lua/rollout_stop.lua")),
            rollout_claim: Script::new(include_str!("lua/rollout_claim.lua")),
            rollout_unclaim: Script::new(include_str!("lua/rollout_unclaim.lua")),
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
    /// Room for followers of live output and logs (`?follow=1`): each polls Redis while it is
    /// open, so their number is bounded.
    pub followers: Arc<tokio::sync::Semaphore>,
}

/// Most followers (`?follow=1` streams) one instance serves at once.
pub const MAX_FOLLOWERS: usize = 256;

pub type AppState = Arc<Shared>;

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
            followers: Arc::new(tokio::sync::Semaphore::new(MAX_FOLLOWERS)),
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
