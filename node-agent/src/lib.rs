//! `jsagent`, the jsacc node agent (DESIGN §6): long-polls the controller for commands, runs them
//! under its process manager, and reports every result through a durable outbox.
//!
//! Modules, one per noun:
//! - [`config`]: flags, `JSAGENT_*` variables and the TOML file, resolved once into a [`Config`].
//! - [`store`]: SQLite on its own thread — the jobs seen (de-duplication, recovery) and the outbox.
//! - [`controller`]: HTTP client of the controller's agent API, with its error enum.
//! - [`backoff`]: jittered exponential backoff for every retry.
//! - [`poller`]: hello, long-poll, store-then-acknowledge, hand over to dispatch.
//! - [`dispatch`]: answers internal commands, sends process commands to the supervisor.
//! - [`supervisor`]: the process manager: job slots (`max_jobs`), serial queues, results,
//!   `kill` and `killall`.
//! - [`registry`]: the jobs the supervisor holds by id, and how a kill reaches their owners.
//! - [`launch`]: a command's args turned into a program to start (templates, PATH, scripts).
//! - [`process`]: one running process: stdin, output tails, time limit, killing its tree.
//! - [`tail`]: the last lines of an output stream.
//! - [`platform`]: process groups (unix) / Job Objects (Windows), signals.
//! - [`uploader`]: posts the outbox to the controller under the retry rules.
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
pub mod launch;
pub mod platform;
pub mod poller;
pub mod process;
pub mod recovery;
pub mod registry;
pub mod store;
pub mod supervisor;
pub mod tail;
pub mod uploader;

#[cfg(test)]
mod testkit;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use controller::{Controller, ControllerError};
use dispatch::Dispatcher;
use poller::{Poller, PollerExit};
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
}

/// Runs the agent until `shutdown` is cancelled or a `restart` command arrives.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Exit, AgentError> {
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .map_err(|source| AgentError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    let store = Store::open(&config.data_dir.join("agent.db")).await?;
    let controller = Controller::new(&config)?;
    let supervisor = Supervisor::new(&config, store.clone());
    let dispatcher = Dispatcher::new(store.clone(), supervisor.clone(), config.gid, config.nid);

    let recovered = recovery::recover(&store, &dispatcher).await?;
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
