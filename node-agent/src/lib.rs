//! `jsagent`, the jsacc node agent (DESIGN §6): long-polls the controller for commands, runs them
//! under its process manager, and reports every result through a durable outbox.
//!
//! A command's way through the agent: the [`link`]'s poller receives it and has the [`store`]
//! keep it before acknowledging it; [`command`] answers it or hands it to the [`supervisor`],
//! which runs its process; the result goes into the store's outbox, which the link's uploader
//! posts to the controller. The job's output feeds the [`logs`] pipeline and [`live`] output,
//! its samples and statsd lines feed [`stats`]; all reach the controller through the outbox as
//! well.
//!
//! The folders, one per part of DESIGN §6:
//! - [`config`]: flags, `JSAGENT_*` variables and the TOML file, resolved once into a [`Config`];
//!   its `[[job]]` tables become the commands of config-file jobs ([`config::jobs`]).
//! - [`enroll`]: `jsagent enroll` — a one-time code traded for the agent's identity, token and
//!   config, over TLS pinned to the controller certificate's fingerprint.
//! - [`link`]: the link to the controller — its HTTP client and TLS trust, the poller, the
//!   uploader and the jittered backoff they retry with.
//! - [`store`]: SQLite on its own thread — the jobs ledger (de-duplication, recovery) and the
//!   durable outbox; results are shortened to the controller's limit before they go in.
//! - [`command`]: the dispatcher of stored commands, the host facts of `get_*_info`, and the
//!   file transfer of `put_file` / `get_file`.
//! - [`supervisor`]: the process manager (job slots, serial queues, restarts, `kill`,
//!   `killall`) with its helpers — launch, process, output, tail, registry, platform — and the
//!   recovery of jobs a previous run left unfinished, and the config-file jobs it starts at
//!   boot ([`supervisor::config_jobs`]).
//! - [`logs`]: the line protocol parser, level filters, the per-job logger ([`logs::Logs`]), the
//!   rotating log store and the forwarder to the outbox.
//! - [`live`]: live output — every line a job prints, with its level, batched every 200 ms
//!   into the outbox for the controller's `output:<id>` stream, capped per run.
//! - [`stats`]: the statsd parser, the aggregator ([`stats::Stats`]) and its flush into the
//!   outbox, the UDP listener and the per-job process samples.
//!
//! Items are `pub(crate)` unless `main.rs`, the fuzz targets (`node-agent/fuzz`) or the benches
//! (`tests/bench`) use them.
//!
//! Unit tests are a child module `tests`, the last item of the file they test: inline
//! (`mod tests { … }`) while they are short (up to ~150 lines), else in `<module>/tests.rs`
//! (`mod tests;`). Their shared set-up — temporary dirs, an agent's store, supervisor and
//! dispatcher — is the one test kit, `testkit`.
//!
//! Exit codes of `jsagent`: 0 after SIGTERM/SIGINT, 1 fatal error, 2 bad flags or config,
//! [`RESTART_EXIT_CODE`] (75) after a `restart` command, once its answer was flushed.
//!
//! On stop (signal or `restart`) the agent stops polling, kills the process trees of running
//! jobs and reports them `ERROR` "agent stopped", leaves waiting jobs `QUEUED` for the next start,
//! and gives the uploader [`link::uploader::FINAL_FLUSH`] to empty the outbox.

// These docs are for the agent's developers (`cargo doc --document-private-items`): they link
// to `pub(crate)` items on purpose.
#![allow(rustdoc::private_intra_doc_links)]

pub(crate) mod command;
pub mod config;
pub mod enroll;
pub(crate) mod link;
pub(crate) mod live;
pub mod logs;
pub mod stats;
pub mod store;
pub mod supervisor;

#[cfg(test)]
mod testkit;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use command::dispatch::Dispatcher;
use link::client::{Controller, ControllerError};
use link::poller::{Poller, PollerExit};
use link::uploader::Uploader;
use logs::logger::{LogsError, StatsSink};
use logs::Logs;
use stats::procstats::GaugeSink;
use stats::udp::StatsdListener;
use stats::Stats;
use store::{Store, StoreError};
use supervisor::{config_jobs, platform, recovery, Supervisor};

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
    let files = command::files::Files::new(&config);
    let dispatcher = Dispatcher::new(
        store.clone(),
        supervisor.clone(),
        logs.clone(),
        files.clone(),
        config.gid,
        config.nid,
    );

    let recovered = recovery::recover(&store, &dispatcher, &supervisor).await?;
    let configured = config_jobs::start(&store, &dispatcher, &supervisor, &config.jobs).await?;
    tracing::info!(
        controller = %config.controller, gid = config.gid, nid = config.nid, data_dir = %config.data_dir.display(),
        max_jobs = config.max_jobs, ended = recovered.ended, killed = recovered.killed, resumed = recovered.resumed,
        config_jobs = config.jobs.len(), config_jobs_removed = configured.removed,
        "jsagent started"
    );

    let tasks = TaskTracker::new();
    let stop_uploads = CancellationToken::new();
    let uploader = Uploader::new(
        store.clone(),
        controller.clone(),
        config.token_source.clone(),
        logs.stopped_output(),
    );
    tasks.spawn(uploader.run(stop_uploads.clone()));
    tasks.spawn(store.clone().prune_periodically(shutdown.clone()));
    tasks.spawn(files.sweep_periodically(shutdown.clone()));
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

    let mut hello = crate::link::client::local_hello(&config.roles);
    hello.config_jobs = config.jobs.iter().map(|j| j.id.clone()).collect();
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
