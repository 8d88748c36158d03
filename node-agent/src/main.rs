//! `jsagent`: parses flags, sets up logging, runs the agent (see the library docs).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use node_agent::config::{Config, Flags};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let filter = EnvFilter::try_from_env("JSAGENT_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match Config::load(flags) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match start(config) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(config: Config) -> anyhow::Result<u8> {
    // reqwest's rustls is built without a default crypto provider: name the one to use.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let exit = runtime.block_on(async {
        let shutdown = CancellationToken::new();
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
        node_agent::run(config, shutdown).await
    })?;
    // Output readers of processes that left their tree may linger; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(exit.code())
}
