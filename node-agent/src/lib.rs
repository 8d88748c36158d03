//! `jsagent`, the jsacc node agent (DESIGN §6): long-polls the controller for commands, runs them
//! under its process manager, and reports every result through a durable outbox.
//!
//! Modules, one per noun:
//! - [`config`]: flags, `JSAGENT_*` variables and the TOML file, resolved once into a [`Config`].
//! - [`store`]: SQLite on its own thread — the jobs seen (de-duplication, recovery) and the outbox.
//! - [`controller`]: HTTP client of the controller's agent API, with its error enum.
//! - [`tls`]: trust in the controller's certificate (`ca_cert`).
//! - [`backoff`]: jittered exponential backoff for every retry.
//! - [`poller`]: hello, long-poll, store-then-acknowledge, hand over to dispatch.
//! - [`dispatch`]: answers internal commands, sends process commands to the supervisor.
//! - [`supervisor`]: the process manager: job slots (`max_jobs`), serial queues, results,
//!   `kill` and `killall`.
//! - [`registry`]: the jobs the supervisor holds by id, and how a kill reaches their owners.
//! - [`launch`]: a command's args turned into a program to start (templates, PATH, scripts).
//! - [`process`]: one running process: stdin, output, time limit, killing its tree.
//! - [`procstats`]: cpu, memory and threads of each running job's process tree.
//! - [`output`]: reading a process's stdout/stderr into tails and log messages (backpressure).
//! - [`tail`]: the last lines of an output stream.
//! - [`logline`]: the line protocol (DESIGN §6.1), a pure parser; [`loglevels`]: level filters.
//! - [`logger`]: per-job filters, result capture, statsd sink; the agent-wide [`logger::Logs`].
//! - [`logstore`]: the rotating SQLite log store on its own thread (`get_msgs`, `del_msgs`).
//! - [`forwarder`]: batches `loglevels_ac` messages into the outbox for the controller.
//! - [`platform`]: process groups (unix) / Job Objects (Windows), signals.
//! - [`result_limit`]: every result shortened to at most 1 MiB of JSON before it is stored.
//! - [`uploader`]: posts the outbox to the controller under the retry rules.
//! - [`statsd`]: the statsd line format (pure parser around the `statsd-parser` crate).
//! - [`stats`]: the stats aggregator ([`stats::Stats`], one handle for the whole agent) and its
//!   flush into the outbox every `stats_flush_interval`.
//! - [`statsd_udp`]: the optional local statsd UDP listener (`statsd_listen`).
//! - [`info`]: host facts for `get_os_info`, `get_cpu_info`, `get_mem_info`, `get_disk_info`,
//!   `get_nic_info`.
//! - [`recovery`]: settles jobs a previous run left unfinished.
//!
//! Exit codes of `jsagent`: 0 after SIGTERM/SIGINT, 1 fatal error, 2 bad flags or config,
//! [`RESTART_EXIT_CODE`] (75) after a `restart` command, once its answer was flushed.
//!
//! On stop (signal or `restart`) the agent stops polling, kills the process trees of running
//! jobs and reports them `ERROR` "agent stopped", leaves waiting jobs `QUEUED` for the next start,
//! and gives the uploader [`uploader::FINAL_FLUSH`] to empty the outbox.

pub mod backoff;
pub mod config;
pub mod controller;
pub mod dispatch;
pub mod forwarder;
pub mod info;
pub mod launch;
pub mod logger;
pub mod loglevels;
pub mod logline;
pub mod logstore;
pub mod output;
pub mod platform;
pub mod poller;
pub mod process;
pub mod procstats;
pub mod recovery;
pub mod registry;
pub mod result_limit;
pub mod stats;
pub mod statsd;
pub mod statsd_udp;
pub mod store;
pub mod supervisor;
pub mod tail;
pub mod tls;
pub mod uploader;

#[cfg(test)]
mod testkit;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use controller::{Controller, ControllerError};
use dispatch::Dispatcher;
use logger::{Logs, LogsError, StatsSink};
use poller::{Poller, PollerExit};
use procstats::GaugeSink;
use stats::Stats;
use statsd_udp::StatsdListener;
use store::{Store, StoreError};
use supervisor::Supervisor;
use uploader::Uploader;

/// Exit code asking the service manager to start the agent again (`EX_TEMPFAIL`).
pub const RESTART_EXIT_CODE: u8 = 75;

/// How long stopping jobs may take to be killed and reported.
const STOP_JOBS_GRACE: Duration = Duration::from_secs(5);

/// How the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped by a signal.
    Stopped,
    /// A `restart` command was answered: exit with [`RESTART_EXIT_CODE`].
    Restart,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Stopped => 0,
            Exit::Restart => RESTART_EXIT_CODE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    Logs(#[from] LogsError),
    #[error("cannot listen for statsd on {addr}: {source}")]
    StatsdListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` is cancelled or a `restart` command arrives.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Exit, AgentError> {
    let data_dir_error = |source| AgentError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .map_err(data_dir_error)?;
    // Job records, results and logs are the operator's: not world-readable.
    platform::restrict_dir(&config.data_dir).map_err(data_dir_error)?;
    let store = Store::open(&config.data_dir.join("agent.db")).await?;
    let controller = Controller::new(&config)?;
    if config.controller.scheme() == "http" && !config::is_loopback(&config.controller) {
        tracing::warn!(controller = %config.controller,
            "plain http to another machine (--insecure-http): the token and every command cross the network in clear");
    }
    // The agent-wide aggregator: level-10 lines (through the logger), the process manager's
    // samples and the UDP listener feed it.
    let stats = Stats::new();
    let statsd_listener = match config.statsd_listen {
        Some(addr) => Some(
            StatsdListener::bind(addr, stats.clone())
                .await
                .map_err(|source| AgentError::StatsdListen { addr, source })?,
        ),
        None => None,
    };
    let level10 = stats.clone();
    let statsd_sink: StatsSink = Arc::new(move |prefix, block| level10.statsd(prefix, block));
    let logs = Logs::start(&config, store.clone(), Some(statsd_sink)).await?;
    let supervisor = Supervisor::new(&config, store.clone(), logs.clone());
    let dispatcher = Dispatcher::new(
        store.clone(),
        supervisor.clone(),
        logs.clone(),
        config.gid,
        config.nid,
    );

    let recovered = recovery::recover(&store, &dispatcher, &supervisor).await?;
    tracing::info!(
        controller = %config.controller, gid = config.gid, nid = config.nid, data_dir = %config.data_dir.display(),
        max_jobs = config.max_jobs, ended = recovered.ended, killed = recovered.killed, resumed = recovered.resumed,
        "jsagent started"
    );

    let tasks = TaskTracker::new();
    let stop_uploads = CancellationToken::new();
    let uploader = Uploader::new(
        store.clone(),
        controller.clone(),
        config.token_source.clone(),
    );
    tasks.spawn(uploader.run(stop_uploads.clone()));
    tasks.spawn(store.clone().prune_periodically(shutdown.clone()));
    let samples = stats.clone();
    let gauge_sink: GaugeSink = Arc::new(move |prefix, values| samples.gauges(prefix, values));
    tasks.spawn(
        supervisor
            .sampler()
            .clone()
            .run(shutdown.clone(), Some(gauge_sink)),
    );
    // Its last flush comes after the jobs have stopped and their output is read: it has a stop
    // of its own.
    let stop_stats = CancellationToken::new();
    let stats_flushed = tokio::spawn(stats.clone().run(
        store.clone(),
        config.gid,
        config.nid,
        config.stats_flush_interval,
        stop_stats.clone(),
    ));
    if let Some(listener) = statsd_listener {
        tasks.spawn(listener.run(shutdown.clone()));
    }

    let hello = crate::controller::local_hello(&config.roles);
    let poller = Poller::new(
        controller,
        store,
        dispatcher,
        hello,
        config.token_source.clone(),
    );
    let polled = poller.run(shutdown.clone()).await;

    tracing::info!("jsagent stopping");
    shutdown.cancel();
    supervisor.shutdown(STOP_JOBS_GRACE).await;
    // The stopped jobs' last messages and metrics, into the outbox before its final upload.
    logs.flush().await;
    stop_stats.cancel();
    if let Err(e) = stats_flushed.await {
        tracing::error!(error = %e, "the stats flush task failed; its last interval is lost");
    }
    stop_uploads.cancel();
    tasks.close();
    tasks.wait().await;
    match polled? {
        PollerExit::Shutdown => Ok(Exit::Stopped),
        PollerExit::Restart => {
            tracing::info!("restarting on request");
            Ok(Exit::Restart)
        }
    }
}

/// Resolves when the agent is asked to stop: SIGTERM or SIGINT (Ctrl-C, console close or system
/// shutdown on Windows).
pub async fn terminate_signal() -> std::io::Result<()> {
    platform::terminate_signal().await
}
