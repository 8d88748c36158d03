//! Start-up and shutdown of a controller: Redis (given or private), the certificate, the
//! background tasks and the HTTP(S) listener.

use std::time::Duration;

use anyhow::Context;
// TCP_NODELAY: without it, small answers wait for delayed ACKs (≈40 ms per round trip measured).
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ServeArgs};
use crate::conn_limit::{FirstByteAcceptor, LimitAcceptor};
use crate::http::{self, Api};
use crate::private_redis::PrivateRedis;
use crate::state::{open_redis, Shared};
use crate::{instances, poll, router, tls};

/// Runs a controller until `shutdown` is cancelled. Parked long-polls are released at once;
/// requests in flight get a few seconds to finish.
pub async fn run(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let private = match &args.redis.redis {
        Some(_) => None,
        None => {
            let r = PrivateRedis::start(&args.redis.data_dir)
                .await
                .context("private redis-server")?;
            // Never the URL itself: it holds the password.
            println!("{}", r.banner());
            Some(r)
        }
    };
    let url = match (&args.redis.redis, &private) {
        (Some(addr), _) => addr.clone(),
        (None, Some(p)) => p.url.clone(),
        (None, None) => unreachable!("a private redis exists when -r is absent"),
    };
    let result = serve(&args, &url, shutdown).await;
    if let Some(p) = private {
        p.stop().await;
    }
    result
}

async fn serve(args: &ServeArgs, url: &str, shutdown: CancellationToken) -> anyhow::Result<()> {
    let redis = open_redis(url, args.redis.redis_ca.as_deref())?;
    let target = redis.target().clone();
    let mut config = Config::from_args(args, target.default_wait_replicas());
    if let Some(file) = &args.metrics_token_file {
        config.metrics_token = Some(read_metrics_token(file)?);
    }
    let state = Shared::connect(config.clone(), redis)
        .await
        .with_context(|| format!("cannot connect to redis at {target}"))?;
    instances::register(&state)
        .await
        .with_context(|| format!("cannot register this instance in redis at {url}"))?;
    let tracker = TaskTracker::new();
    tracker.spawn(router::supervise(state.clone(), shutdown.clone()));
    tracker.spawn(instances::run(state.clone(), shutdown.clone()));
    tracker.spawn(crate::rollout::run(state.clone(), shutdown.clone()));
    tracker.spawn(poll::subscribe(state.clone(), shutdown.clone()));
    tracker.close();

    let app = http::app(Api {
        state: state.clone(),
        shutdown: shutdown.clone(),
    });
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let scheme = if args.insecure_http { "http" } else { "https" };
    let limited = LimitAcceptor::new(NoDelayAcceptor::new(), config.max_connections);
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = if args.insecure_http {
        tracing::warn!("serving plain HTTP: agent tokens cross the network in clear");
        let mut server = axum_server::bind(config.listen)
            .acceptor(FirstByteAcceptor::new(limited, config.header_timeout))
            .handle(handle.clone());
        bound_in_time(server.http_builder(), &config);
        tokio::spawn(server.serve(service))
    } else {
        let files = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => {
                let (files, created) = tls::self_signed(&args.redis.data_dir)?;
                let verb = if created { "generated" } else { "using" };
                println!(
                    "{verb} self-signed certificate {} (give it to agents as --ca-cert)",
                    files.cert.display()
                );
                files
            }
        };
        println!(
            "certificate SHA-256 fingerprint {}",
            tls::fingerprint(&files.cert)?
        );
        let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
            .await
            .with_context(|| {
                format!(
                    "cannot load {} / {}",
                    files.cert.display(),
                    files.key.display()
                )
            })?;
        let acceptor = RustlsAcceptor::new(rustls)
            .handshake_timeout(config.header_timeout)
            .acceptor(limited);
        let acceptor = FirstByteAcceptor::new(acceptor, config.header_timeout);
        let mut server = axum_server::bind(config.listen)
            .acceptor(acceptor)
            .handle(handle.clone());
        bound_in_time(server.http_builder(), &config);
        tokio::spawn(server.serve(service))
    };
    match handle.listening().await {
        Some(addr) => println!(
            "jsacc {} listening on {scheme}://{addr} (instance {}, redis {target} ({}), writes confirmed by {} replica(s))",
            env!("CARGO_PKG_VERSION"),
            state.instance,
            target.topology.as_str(),
            config.wait_replicas,
        ),
        None => {
            shutdown.cancel();
            return match server.await {
                Ok(Err(e)) => Err(anyhow::anyhow!("cannot listen on {}: {e}", config.listen)),
                _ => Err(anyhow::anyhow!("cannot listen on {}", config.listen)),
            };
        }
    }
    let served = server.await.context("server task")?;
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 5 s");
    } else if let Err(e) = instances::forget(&state).await {
        tracing::warn!(error = %e, "cannot deregister this instance; others will once its liveness key expires");
    }
    served.context("server failed")
}

/// Time bounds of a connection: its headers must arrive within `--header-timeout` (HTTP/1), and
/// an HTTP/2 connection that stops answering pings is closed. Bodies have their own deadline
/// once the token is checked (`http::auth::authenticate`).
fn bound_in_time(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    config: &Config,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(config.header_timeout)
        .max_concurrent_streams(64);
}

/// The metrics token from its file (one line), kept as its hash.
fn read_metrics_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the metrics token file {}", file.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        token.len() >= 16,
        "the metrics token in {} is empty or shorter than 16 characters",
        file.display()
    );
    Ok(crate::auth::hash(token))
}
