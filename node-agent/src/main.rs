//! `jsagent`: parses flags, sets up logging, runs the agent (see the library docs). With
//! `--service` (Windows) the Service Control Manager starts and stops it ([`service`]);
//! `jsagent enroll` enrolls this machine instead ([`node_agent::enroll`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use node_agent::config::{Command, Config, Flags};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[cfg(windows)]
mod service;

fn main() -> ExitCode {
    let mut flags = Flags::parse();
    if let Some(Command::Enroll(enroll)) = flags.command.take() {
        init_logging(std::io::stderr, std::io::stderr().is_terminal());
        return node_agent::enroll::main(enroll);
    }
    if flags.service {
        return service_mode(flags);
    }
    init_logging(std::io::stderr, std::io::stderr().is_terminal());
    let config = match Config::load(flags) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    exit_code(start(config, shutdown, true))
}

#[cfg(windows)]
fn service_mode(flags: Flags) -> ExitCode {
    service::run(flags)
}

#[cfg(not(windows))]
fn service_mode(_flags: Flags) -> ExitCode {
    eprintln!(
        "jsagent: --service is for Windows (the Service Control Manager); on Linux run jsagent \
         under systemd (deploy/systemd/jsagent.service), which stops it with SIGTERM"
    );
    ExitCode::from(2)
}

/// Logs to `writer`, filtered by `JSAGENT_LOG` (or `RUST_LOG`), `info` by default.
fn init_logging<W>(writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_env("JSAGENT_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .init();
}

fn exit_code(exit: anyhow::Result<u8>) -> ExitCode {
    match exit {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the agent until `shutdown` (or, with `signals`, SIGTERM/SIGINT or their Windows
/// equivalents); returns its exit code.
fn start(config: Config, shutdown: CancellationToken, signals: bool) -> anyhow::Result<u8> {
    // reqwest's rustls is built without a default crypto provider: name the one to use.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let exit = runtime.block_on(async {
        if signals {
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                match node_agent::terminate_signal().await {
                    Ok(()) => {
                        tracing::info!("stop signal received");
                        on_signal.cancel();
                    }
                    Err(e) => tracing::error!(error = %e, "cannot listen for stop signals; stop the agent with SIGKILL"),
                }
            });
        }
        node_agent::run(config, shutdown).await
    })?;
    // Output readers of processes that left their tree may linger; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(exit.code())
}
