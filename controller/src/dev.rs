//! `jsacc dev`: a whole local cluster in one process, like `nomad agent -dev`. It starts the
//! private redis-server of `--data-dir`, mints a token for one agent, runs a controller in this
//! process on 127.0.0.1, starts `jsagent` as a child, and once the agent has said hello prints
//! how to use the cluster and the line [`READY`]. SIGINT or SIGTERM stops the agent, then the
//! controller, then the Redis.
//!
//! - [`agent`]: the agent child and its files.
//! - [`banner`]: what is printed once the cluster is ready.
//!
//! Children and the death of `jsacc dev`: the agent is killed when its handle is dropped (an
//! error or a panic unwinding through here), but a SIGKILLed `jsacc dev` leaves it and the Redis
//! running (no `PR_SET_PDEATHSIG`: it needs an `unsafe` `pre_exec`, which the workspace denies).
//! The next `jsacc dev` on the same data dir reuses that Redis; `<data-dir>/dev.pid` keeps two
//! of them off one data dir.

mod agent;
mod banner;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Cli, DevArgs, ServeArgs};
use crate::private_redis::PrivateRedis;
use crate::{auth, keys, server, tls};
use agent::{AgentFiles, AgentProcess};

/// The line printed when the agent is online; scripts wait for it (deploy/quickstart.sh).
pub const READY: &str = "jsacc dev: ready";

/// Ports tried, in order, without `-p`.
const PORTS: std::ops::RangeInclusive<u16> = 4000..=4099;
/// How long the controller and then the agent may take to come up.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Runs the cluster until `shutdown` is cancelled (Ok) or a part of it stops by itself (Err).
pub async fn run(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("data dir {}", args.data_dir.display()))?;
    let agent_bin = agent::find_binary(args.agent_bin.as_deref())?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _pid = PidFile::claim(&dir)?;
    let port = match args.port {
        Some(p) => p,
        None => free_port()?,
    };
    let redis = PrivateRedis::start(&dir)
        .await
        .context("private redis-server")?;
    println!("{}", redis.banner());
    let dev = Dev {
        args: &args,
        dir: &dir,
        agent_bin: &agent_bin,
        redis_url: &redis.url,
        port,
    };
    let outcome = dev.run(&shutdown).await;
    tracing::info!("stopping the private redis-server");
    redis.stop().await;
    if outcome.is_ok() {
        tracing::info!("stopped");
    }
    outcome
}

/// What one `jsacc dev` runs with.
struct Dev<'a> {
    args: &'a DevArgs,
    dir: &'a Path,
    agent_bin: &'a Path,
    redis_url: &'a str,
    port: u16,
}

/// What ended a wait.
enum Event {
    Shutdown,
    ControllerEnded,
    AgentExited(Option<ExitStatus>),
    Tick,
}

impl Dev<'_> {
    /// Runs the controller while the agent runs; the controller stops after the agent.
    async fn run(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (cert, _) = tls::self_signed(self.dir)?;
        let files = AgentFiles::new(self.dir, self.args.gid, self.args.nid);
        let token = self.mint_token().await?;
        let controller = format!("https://127.0.0.1:{}", self.port);
        let settings = agent::Settings {
            controller: &controller,
            gid: self.args.gid,
            nid: self.args.nid,
            roles: &self.args.roles,
            ca_cert: &cert.cert,
        };
        agent::write_files(&files, &settings, &token)?;

        let stop_controller = CancellationToken::new();
        let ended = CancellationToken::new();
        let server = self.spawn_controller(stop_controller.clone(), ended.clone())?;
        let supervised = self.supervise(&files, &cert.cert, shutdown, &ended).await;
        tracing::info!("stopping the controller");
        stop_controller.cancel();
        let served = server.await.context("controller task")?;
        // The controller's own error says more than "the controller stopped".
        served.context("controller").and(supervised)
    }

    async fn mint_token(&self) -> anyhow::Result<String> {
        let mut conn = connect(self.redis_url).await?;
        let (gid, nid) = (self.args.gid, self.args.nid);
        auth::add(&mut conn, gid, nid, &self.args.roles)
            .await
            .with_context(|| format!("cannot store a token for agent {gid}:{nid}"))
    }

    /// The controller in this process; `ended` is cancelled when it returns.
    fn spawn_controller(
        &self,
        stop: CancellationToken,
        ended: CancellationToken,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
        let args = serve_args(self.dir, self.redis_url, self.port)?;
        Ok(tokio::spawn(async move {
            let _ended = ended.drop_guard();
            server::run(args, stop).await
        }))
    }

    /// Starts the agent once the controller listens, waits for its hello, prints the banner,
    /// then keeps it running until `shutdown`.
    async fn supervise(
        &self,
        files: &AgentFiles,
        cert: &Path,
        shutdown: &CancellationToken,
        ended: &CancellationToken,
    ) -> anyhow::Result<()> {
        if !listening(self.port, shutdown, ended).await? {
            return Ok(());
        }
        let mut agent = AgentProcess::spawn(self.agent_bin, files)?;
        if !self.wait_hello(&mut agent, files, shutdown, ended).await? {
            agent.stop().await;
            return Ok(());
        }
        banner::print(&banner::Facts {
            dir: self.dir,
            port: self.port,
            gid: self.args.gid,
            nid: self.args.nid,
            cert,
            agent_pid: agent.pid(),
            agent_log: &files.log,
        });
        loop {
            match next_event(&mut agent, shutdown, ended, None).await {
                Event::AgentExited(status) if restart_asked(status) => {
                    tracing::info!(
                        "the agent asked to be restarted (exit code 75): starting it again"
                    );
                    agent = AgentProcess::spawn(self.agent_bin, files)?;
                }
                Event::AgentExited(status) => return Err(agent_died(status, files)),
                Event::ControllerEnded => {
                    agent.stop().await;
                    anyhow::bail!("the controller stopped");
                }
                Event::Shutdown | Event::Tick => break,
            }
        }
        tracing::info!(pid = agent.pid(), "stopping the agent");
        agent.stop().await;
        Ok(())
    }

    /// Whether the agent said hello (false: shutdown came first).
    async fn wait_hello(
        &self,
        agent: &mut AgentProcess,
        files: &AgentFiles,
        shutdown: &CancellationToken,
        ended: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let since = schemas::now_ms();
        let mut conn = connect(self.redis_url).await?;
        let id = keys::agent_id(self.args.gid, self.args.nid);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        let tick = Some(Duration::from_millis(200));
        while tokio::time::Instant::now() < deadline {
            match next_event(agent, shutdown, ended, tick).await {
                Event::Shutdown => return Ok(false),
                Event::ControllerEnded => anyhow::bail!("the controller stopped during start-up"),
                Event::AgentExited(status) => return Err(agent_died(status, files)),
                Event::Tick => {}
            }
            let seen: Option<f64> = redis::cmd("ZSCORE")
                .arg(keys::AGENTS)
                .arg(&id)
                .query_async(&mut conn)
                .await
                .context("reading the agent registry")?;
            if seen.is_some_and(|ms| ms >= since as f64) {
                return Ok(true);
            }
        }
        anyhow::bail!(
            "the agent did not say hello within {START_LIMIT:?}; last lines of {}:\n{}",
            files.log.display(),
            agent::log_tail(files, 20)
        )
    }
}

async fn next_event(
    agent: &mut AgentProcess,
    shutdown: &CancellationToken,
    ended: &CancellationToken,
    tick: Option<Duration>,
) -> Event {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Event::Shutdown,
        _ = ended.cancelled() => Event::ControllerEnded,
        status = agent.wait() => Event::AgentExited(status.ok()),
        _ = tokio::time::sleep(tick.unwrap_or_default()), if tick.is_some() => Event::Tick,
    }
}

fn restart_asked(status: Option<ExitStatus>) -> bool {
    status.and_then(|s| s.code()) == Some(agent::RESTART_CODE)
}

fn agent_died(status: Option<ExitStatus>, files: &AgentFiles) -> anyhow::Error {
    let how = status.map_or_else(|| "with an unknown status".to_owned(), |s| s.to_string());
    anyhow::anyhow!(
        "the agent exited by itself ({how}); last lines of {}:\n{}",
        files.log.display(),
        agent::log_tail(files, 20)
    )
}

/// Whether the controller accepts connections (false: shutdown came first).
async fn listening(
    port: u16,
    shutdown: &CancellationToken,
    ended: &CancellationToken,
) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    while tokio::time::Instant::now() < deadline {
        if shutdown.is_cancelled() {
            return Ok(false);
        }
        // The controller's own error (e.g. the port is taken) is returned by `Dev::run`.
        anyhow::ensure!(!ended.is_cancelled(), "the controller did not start");
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the controller did not listen on 127.0.0.1:{port} within {START_LIMIT:?}")
}

/// The controller's settings: the defaults and the `JSACC_*` tuning variables, as plain `jsacc`
/// reads them, with what `jsacc dev` decides itself put over them.
fn serve_args(dir: &Path, redis_url: &str, port: u16) -> anyhow::Result<ServeArgs> {
    use clap::Parser;
    let mut args = Cli::try_parse_from(["jsacc"])
        .context("the JSACC_* environment variables")?
        .serve;
    args.port = port;
    args.bind = std::net::Ipv4Addr::LOCALHOST.into();
    args.redis.redis = Some(redis_url.to_owned());
    args.redis.redis_ca = None;
    args.redis.redis_wait_replicas = None;
    args.redis.data_dir = dir.to_path_buf();
    args.tls_cert = None;
    args.tls_key = None;
    args.insecure_http = false;
    Ok(args)
}

async fn connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).context("private redis URL")?;
    client
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to the private redis-server")
}

/// The first port of [`PORTS`] free on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    PORTS
        .clone()
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .ok_or_else(|| anyhow::anyhow!("no free port in {PORTS:?} on 127.0.0.1: pass -p"))
}

/// `<data-dir>/dev.pid`: this process's id while it runs, removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    /// Refuses a data dir another live `jsacc dev` holds.
    fn claim(dir: &Path) -> anyhow::Result<PidFile> {
        let path = dir.join("dev.pid");
        let recorded = std::fs::read_to_string(&path).ok();
        if let Some(pid) = recorded.and_then(|t| t.trim().parse::<u32>().ok()) {
            anyhow::ensure!(
                pid == std::process::id() || !runs_jsacc(pid),
                "another jsacc dev (pid {pid}) runs on {}: stop it first (kill {pid})",
                dir.display()
            );
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether process `pid` is alive and a `jsacc` (its id may have been reused since).
#[cfg(target_os = "linux")]
fn runs_jsacc(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "jsacc")
}

#[cfg(all(unix, not(target_os = "linux")))]
fn runs_jsacc(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
}

#[cfg(not(unix))]
fn runs_jsacc(_pid: u32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jsacc-dev-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stale_pid_file_is_taken_over_and_removed_on_drop() {
        let dir = temp_dir();
        // Not a jsacc: this test binary, or no process at all.
        std::fs::write(dir.join("dev.pid"), "999999999\n").unwrap();
        let pid = PidFile::claim(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join("dev.pid")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(pid);
        assert!(!dir.join("dev.pid").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_controller_serves_on_loopback_with_the_private_redis() {
        let dir = temp_dir();
        let args = serve_args(&dir, "redis://default:pw@127.0.0.1:1", 4123).unwrap();
        assert_eq!(args.port, 4123);
        assert!(args.bind.is_loopback());
        assert_eq!(args.redis.data_dir, dir);
        assert!(!args.insecure_http && args.tls_cert.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
