//! The private `redis-server` that `jsacc` starts when it is given no `-r`, so one command gives
//! a working controller. Its data (append-only file) lives in `<data-dir>/redis`, its URL in
//! `<data-dir>/redis.url` (read by `jsacc token` and printed for clients).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum PrivateRedisError {
    #[error("cannot start redis-server (is it installed and on PATH?): {0}")]
    Spawn(std::io::Error),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("redis-server did not answer within 10 s; see {log}")]
    NotReady { log: PathBuf },
    #[error(
        "no -r given and no private redis-server recorded in {0}; start `jsacc` first or pass -r"
    )]
    NotRunning(PathBuf),
}

/// A running private redis-server; `stop` shuts it down (it also dies with the controller's
/// process group). `child` is `None` when an earlier controller's server was still alive and reused.
pub struct PrivateRedis {
    pub url: String,
    child: Option<Child>,
}

fn url_file(data_dir: &Path) -> PathBuf {
    data_dir.join("redis.url")
}

/// The URL of the data dir's private redis-server, for commands that do not start it.
pub fn recorded_url(data_dir: &Path) -> Result<String, PrivateRedisError> {
    std::fs::read_to_string(url_file(data_dir))
        .map(|s| s.trim().to_owned())
        .map_err(|_| PrivateRedisError::NotRunning(url_file(data_dir)))
}

async fn answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    )
}

impl PrivateRedis {
    /// Reuses the data dir's redis-server if it still answers, else starts one on a free port.
    pub async fn start(data_dir: &Path) -> Result<PrivateRedis, PrivateRedisError> {
        if let Ok(url) = recorded_url(data_dir) {
            if answers(&url).await {
                tracing::info!(%url, "reusing the private redis-server of an earlier run");
                return Ok(PrivateRedis { url, child: None });
            }
        }
        let dir = data_dir.join("redis");
        std::fs::create_dir_all(&dir).map_err(|source| PrivateRedisError::Io {
            path: dir.clone(),
            source,
        })?;
        let port = free_port().map_err(PrivateRedisError::Spawn)?;
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(PrivateRedisError::Spawn)?;
        let url = format!("redis://127.0.0.1:{port}");
        let redis = PrivateRedis {
            url: url.clone(),
            child: Some(child),
        };
        for _ in 0..100 {
            if answers(&url).await {
                std::fs::write(url_file(data_dir), format!("{url}\n")).map_err(|source| {
                    PrivateRedisError::Io {
                        path: url_file(data_dir),
                        source,
                    }
                })?;
                return Ok(redis);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(PrivateRedisError::NotReady { log })
    }

    /// Asks redis-server to shut down (flushing its append-only file), then waits for it.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(client) = redis::Client::open(self.url.as_str()) {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut conn).await;
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
