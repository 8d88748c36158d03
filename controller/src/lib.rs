//! jsacc, the agent controller (DESIGN.md). A stateless HTTPS service backed by Redis: any
//! number of instances share one Redis.
//!
//! The layers, each importing only those below it:
//!
//! - Start-up: [`config`] (flags and the resolved [`config::Config`]), [`server`] (Redis,
//!   certificate, tasks, listener, graceful shutdown), [`dev`] (`jsacc dev`: a local cluster
//!   in one process), [`private_redis`] and [`tls`] (the private redis-server and the
//!   self-signed certificate), [`conn_limit`] (connection caps and first-byte deadlines).
//! - [`http`]: the endpoints of DESIGN §8 — the router `app()`, `AppError`, authentication and
//!   the agent and operator handlers. Nothing below imports it.
//! - The work, in Redis: [`router`] moves commands from `cmds_queue` to agent queues (§5.1);
//!   [`poll`] serves long-polls and holds the one subscription that wakes them (§5.2);
//!   [`results`] records each (job, agent) result once (§5.3); [`logs`], [`stats`] and
//!   [`output`] (live output, `output:<id>`) append what agents forward; [`instances`] watches instances' liveness, recovers dead ones'
//!   routing lists and expires `max_wait`; [`agents`] is the registry and role lookups;
//!   [`auth`] the agent tokens.
//! - Shared by all of them: [`state`] (settings, connections, scripts; it imports only the
//!   leaves below), [`local`] (what one instance keeps in memory: parked polls, counters),
//!   [`intake`] (checking posted bodies, pure), [`backoff`] (the one retry pause).
//! - Leaves: [`keys`] (every Redis key name and its cluster slot tag; the Lua scripts live in
//!   `src/lua/`), [`target`] and [`redis_conn`] (the `-r` forms, and connections to them that
//!   follow failovers, split pipelines by cluster slot and `WAIT` for replicas), [`metrics`]
//!   (Prometheus counters, histograms and the rendering of agents' stats).

pub mod agents;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod conn_limit;
pub mod dev;
pub mod http;
pub mod instances;
pub mod intake;
pub mod keys;
pub mod local;
pub mod logs;
pub mod metrics;
pub mod output;
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

#[cfg(test)]
mod testkit;

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
