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
//!   [`results`] records each (job, agent) result once (§5.3), opening the record of an
//!   agent's config-file job ([`config_jobs`]) at its first result; [`rollout`] releases fanouts
//!   in batches (`batch`, `batch_wait`, `max_failures`) and stops them; [`logs`], [`stats`] and
//!   [`output`] (live output, `output:<id>`) append what agents forward; [`instances`] watches instances' liveness, recovers dead ones'
//!   routing lists and expires `max_wait`; [`agents`] is the registry and role lookups;
//!   [`jobs`] and [`fleet`] are what the operator API reads and writes of jobs, agents and
//!   logs; [`auth`] the agent tokens,
//!   [`users`] the operator accounts, [`enroll`] the one-time codes that mint agent tokens,
//!   and [`audit`] the trail of
//!   who changed them.
//! - Shared by all of them: [`state`] (settings, connections, scripts; it imports only the
//!   leaves below), [`local`] (what one instance keeps in memory: parked polls, counters),
//!   [`intake`] (checking posted bodies, pure), [`backoff`] (the one retry pause).
//! - Leaves: [`keys`] (every Redis key name and its cluster slot tag; the Lua scripts live in
//!   `src/lua/`), [`target`] and [`redis_conn`] (the `-r` forms, and connections to them that
//!   follow failovers, split pipelines by cluster slot and `WAIT` for replicas), [`metrics`]
//!   (Prometheus counters, histograms and the rendering of agents' stats).

pub mod agents;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod config_jobs;
pub mod conn_limit;
pub mod dev;
pub mod enroll;
pub mod fleet;
pub mod http;
pub mod instances;
pub mod intake;
pub mod jobs;
pub mod keys;
pub mod local;
pub mod logs;
pub mod metrics;
pub mod output;
pub mod poll;
pub mod private_redis;
pub mod redis_conn;
pub mod results;
pub mod rollout;
pub mod router;
pub mod server;
pub mod state;
pub mod stats;
pub mod target;
pub mod tls;
pub mod users;

#[cfg(test)]
mod testkit;

use config::{EnrollCmd, RedisArgs, TokenCmd, UserCmd};

/// `jsacc token add|revoke`: prints what it did; the token itself on the last line. Each
/// change is audited.
pub async fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    let args = match &cmd {
        TokenCmd::Add(a) => &a.agent,
        TokenCmd::Revoke(a) => a,
    };
    let mut conn = connect(&args.redis).await?;
    let agent = format!("agent {}:{}", args.gid, args.nid);
    match &cmd {
        TokenCmd::Add(add) => {
            let a = &add.agent;
            let token = auth::add(&mut conn, a.gid, a.nid, &add.roles).await?;
            audited(&mut conn, "token add", &agent).await?;
            let roles = match add.roles.is_empty() {
                true => "no roles".to_owned(),
                false => format!("roles {}", add.roles.join(",")),
            };
            println!("new token for {agent} with {roles} (only its hash is stored; keep it in the agent's token_file):");
            println!("{token}");
        }
        TokenCmd::Revoke(a) => {
            if !auth::revoke(&mut conn, a.gid, a.nid).await? {
                anyhow::bail!("{agent} has no token");
            }
            audited(&mut conn, "token revoke", &agent).await?;
            println!("revoked the token of {agent}");
        }
    }
    Ok(())
}

/// `jsacc user add|list|revoke`: prints what it did; a new token on the last line. Each change
/// is audited.
pub async fn user(cmd: UserCmd) -> anyhow::Result<()> {
    let redis = match &cmd {
        UserCmd::Add(a) => &a.user.redis,
        UserCmd::List(a) => &a.redis,
        UserCmd::Revoke(a) => &a.redis,
    };
    let mut conn = connect(redis).await?;
    match &cmd {
        UserCmd::Add(add) => {
            let name = &add.user.name;
            let token = users::add(&mut conn, name, add.role).await?;
            audited(
                &mut conn,
                "user add",
                &format!("account {name} ({})", add.role),
            )
            .await?;
            println!("new account {name} with role {} (only its token's hash is stored; this is the only time it is shown):", add.role);
            println!("{token}");
        }
        UserCmd::List(_) => {
            let all = users::list(&mut conn).await?;
            if all.is_empty() {
                println!(
                    "no accounts (add one with `jsacc user add NAME --role viewer|operator|admin`)"
                );
            }
            for u in all {
                println!("{:<24} {:<9} added {}", u.name, u.role, when(u.created));
            }
        }
        UserCmd::Revoke(a) => {
            if !users::revoke(&mut conn, &a.name).await? {
                anyhow::bail!("no account `{}`", a.name);
            }
            audited(&mut conn, "user revoke", &format!("account {}", a.name)).await?;
            println!("revoked account {}", a.name);
        }
    }
    Ok(())
}

/// `jsacc enroll create|list|revoke`: prints what it did; a new code on the last line. Creating
/// and revoking are audited.
pub async fn enroll(cmd: EnrollCmd) -> anyhow::Result<()> {
    let redis = match &cmd {
        EnrollCmd::Create(a) => &a.redis,
        EnrollCmd::List(a) => &a.redis,
        EnrollCmd::Revoke(a) => &a.redis,
    };
    let mut conn = connect(redis).await?;
    let now = schemas::now_ms();
    match &cmd {
        EnrollCmd::Create(a) => {
            let grant = enroll::Grant {
                gid: a.gid,
                nid: a.nid,
                roles: a.roles.clone(),
                ttl: std::time::Duration::from_secs(a.ttl),
                uses: a.uses,
            };
            let code = enroll::create(&mut conn, &grant, now).await?;
            let what = grant_text(a.gid, a.nid, &a.roles);
            let prefix = &auth::hash(&code)[..enroll::PREFIX_LEN];
            let target = format!("code {prefix} for {what}, {} use(s)", a.uses);
            audited(&mut conn, "enroll create", &target).await?;
            println!(
                "enrollment code {prefix} for {what}: {} use(s), until {} (only its hash is stored; \
                 on the new machine: jsagent enroll CODE --controller URL --ca-fingerprint SHA256):",
                a.uses,
                when(now + a.ttl * 1000)
            );
            println!("{code}");
        }
        EnrollCmd::List(_) => {
            let all = enroll::list(&mut conn, now).await?;
            if all.is_empty() {
                println!(
                    "no live enrollment codes (create one with `jsacc enroll create --gid G`)"
                );
            }
            for l in all {
                let r = &l.record;
                println!(
                    "{}  {:<40} {:>4} use(s) left  until {}",
                    l.prefix,
                    grant_text(r.gid, r.nid, &r.roles),
                    r.uses,
                    when(r.expires)
                );
            }
        }
        EnrollCmd::Revoke(a) => {
            let gone = enroll::revoke(&mut conn, &a.prefix, now).await?;
            let r = &gone.record;
            let target = format!(
                "code {} for {}",
                gone.prefix,
                grant_text(r.gid, r.nid, &r.roles)
            );
            audited(&mut conn, "enroll revoke", &target).await?;
            println!("revoked enrollment {target}");
        }
    }
    Ok(())
}

/// `grid 1, node 5, roles web,db` / `grid 1, next free node, no roles`.
fn grant_text(gid: u64, nid: Option<u64>, roles: &[String]) -> String {
    let node = nid.map_or_else(|| "next free node".to_owned(), |n| format!("node {n}"));
    let roles = match roles.is_empty() {
        true => "no roles".to_owned(),
        false => format!("roles {}", roles.join(",")),
    };
    format!("grid {gid}, {node}, {roles}")
}

/// Appends a change made from this command line to the audit trail.
async fn audited(conn: &mut redis_conn::Conn, what: &str, target: &str) -> anyhow::Result<()> {
    let (who, from) = (audit::cli_actor(), audit::this_host());
    let entry = audit::Entry {
        who: &who,
        what,
        target,
        from: &from,
    };
    audit::record(conn, &entry)
        .await
        .map_err(|e| anyhow::anyhow!("{what} done, but not recorded in the audit trail: {e}"))
}

/// `ms` since the epoch as UTC `YYYY-MM-DD HH:MM`.
fn when(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute()),
        Err(_) => format!("{ms} ms"),
    }
}

async fn connect(args: &RedisArgs) -> anyhow::Result<redis_conn::Conn> {
    let url = match &args.redis {
        Some(addr) => addr.clone(),
        None => private_redis::recorded_url(&args.data_dir)?,
    };
    let redis = state::open_redis(&url, args.redis_ca.as_deref())?;
    redis
        .connect(std::time::Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to redis at {}: {e}", redis.target()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shown_as_utc_dates() {
        assert_eq!(super::when(0), "1970-01-01 00:00 UTC");
        assert_eq!(
            super::when(1_764_547_200_000 + 3_660_000),
            "2025-12-01 01:01 UTC"
        );
    }
}
