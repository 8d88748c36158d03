//! What the unit tests share: a real redis-server on a free port (no mocks), and a controller
//! state connected to it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::Api;
use crate::state::{self, AppState, Shared};

/// A real redis-server without a password on a free port, killed on drop.
pub struct RedisServer {
    child: std::process::Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server) starts");
        let server = RedisServer { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not accept connections in 5 s");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A controller's shared state on `server` with `config`.
pub async fn state(server: &RedisServer, config: Config) -> AppState {
    let redis = state::open_redis(&server.url(), None).expect("a redis target");
    Shared::connect(config, redis)
        .await
        .expect("connects to redis")
}

/// The handlers' state on `server`, with the default settings.
pub async fn api(server: &RedisServer) -> Api {
    api_with(server, Config::default()).await
}

/// The handlers' state on `server`, with `config`.
pub async fn api_with(server: &RedisServer, config: Config) -> Api {
    Api {
        state: state(server, config).await,
        shutdown: CancellationToken::new(),
    }
}

/// The answers in `cmds_queue_<id>`, oldest first, each parsed as a `T`.
pub async fn results_of<T: serde::de::DeserializeOwned>(
    conn: &mut crate::redis_conn::Conn,
    id: &str,
) -> Vec<T> {
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(crate::keys::results(id))
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("LRANGE");
    items
        .iter()
        .map(|i| serde_json::from_str(i).expect("an answer in JSON"))
        .collect()
}
