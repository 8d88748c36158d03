//! jsacc, the agent controller (DESIGN.md). A stateless HTTPS service backed by Redis: any
//! number of instances share one Redis.
//!
//! - [`config`]: flags, environment variables and the resolved [`config::Config`].
//! - [`server`]: start-up (Redis, certificate, tasks, listener) and graceful shutdown.
//! - [`api`]: the HTTP endpoints of DESIGN §8 and their JSON errors.
//! - [`router`]: moves commands from `cmds_queue` to agent queues (DESIGN §5.1).
//! - [`poll`]: long-polls and the one subscription that wakes them (DESIGN §5.2).
//! - [`results`]: records each (job, agent) result once (DESIGN §5.3).
//! - [`logs`]: appends forwarded log messages to `log.<domain>.<name>` and `alerts`, once each.
//! - [`instances`]: liveness of instances, recovery of dead ones' routing lists, `max_wait`.
//! - [`agents`]: the agent registry (`agents`, `agent:{g:n}`) and role lookups.
//! - [`auth`]: agent tokens.
//! - [`keys`]: every Redis key name and its cluster slot tag; the Lua scripts live in `src/lua/`.
//! - [`target`]: the `-r` forms (standalone, sentinel, cluster); [`redis_conn`]: connections to
//!   them that follow failovers, split pipelines by cluster slot, and `WAIT` for replicas.
//! - [`metrics`]: Prometheus counters and histograms, and the rendering of agents' stats.
//! - [`stats`]: stats batch intake (`stats:{g:n}`, `stats:{g:n}:latest`) and `/metrics/agents`.
//! - [`conn_limit`]: the `--max-connections` cap on accepted connections.
//! - [`tls`], [`private_redis`]: the self-signed certificate and the private redis-server.

pub mod agents;
pub mod api;
pub mod auth;
pub mod config;
pub mod conn_limit;
pub mod instances;
pub mod keys;
pub mod logs;
pub mod metrics;
pub mod poll;
pub mod private_redis;
pub mod redis_conn;
pub mod results;
pub mod router;
pub mod server;
pub mod state;
pub mod stats;
pub mod target;
pub mod tls;

use config::{TokenArgs, TokenCmd};

/// `jsacc token add|revoke`: prints what it did; the token itself on the last line.
pub async fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    let args = match &cmd {
        TokenCmd::Add(a) => &a.agent,
        TokenCmd::Revoke(a) => a,
    };
    let mut conn = connect(args).await?;
    match &cmd {
        TokenCmd::Add(add) => {
            let a = &add.agent;
            let token = auth::add(&mut conn, a.gid, a.nid, &add.roles).await?;
            let roles = match add.roles.is_empty() {
                true => "no roles".to_owned(),
                false => format!("roles {}", add.roles.join(",")),
            };
            println!("new token for agent {}:{} with {roles} (only its hash is stored; keep it in the agent's token_file):", a.gid, a.nid);
            println!("{token}");
        }
        TokenCmd::Revoke(a) => {
            if auth::revoke(&mut conn, a.gid, a.nid).await? {
                println!("revoked the token of agent {}:{}", a.gid, a.nid);
            } else {
                anyhow::bail!("agent {}:{} has no token", a.gid, a.nid);
            }
        }
    }
    Ok(())
}

async fn connect(args: &TokenArgs) -> anyhow::Result<redis_conn::Conn> {
    let url = match &args.redis.redis {
        Some(addr) => addr.clone(),
        None => private_redis::recorded_url(&args.redis.data_dir)?,
    };
    let redis = state::open_redis(&url, args.redis.redis_ca.as_deref())?;
    redis
        .connect(std::time::Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to redis at {}: {e}", redis.target()))
}
