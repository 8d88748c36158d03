//! The bare relay: the least work any design of a Redis-fed job relay must do per job, written as
//! plainly and fast as it can be, so the roundtrip benchmark can say how close jsacc comes to it
//! in the same run (issue 15). It has none of jsacc's guarantees: no TLS, no tokens, no job
//! records, no routing lists, no acknowledgements, no durable agent store.
//!
//! The shape, per job: the client's `LPUSH cmds_queue`; a router's pop and its push onto the
//! agent's list; an HTTP long-poll that pops the agent's list; the agent's result post, which the
//! relay pushes onto `cmds_queue_<id>`; the client's `BLPOP`. The same client processes drive it
//! as drive jsacc. Everything here runs in the benchmark's own process: one router task, an
//! HTTP/1.1 server, and one simulated agent per node id (a keep-alive HTTP client that answers
//! every command `pong` at once, posting a poll's results in one request while it polls again).
//!
//! Batching is allowed where any relay can batch: the router drains up to [`BATCH`] commands per
//! wake-up into one pipeline, a poll returns up to [`BATCH`] commands, a result post carries a
//! poll's results. Keys of its own (`bare:agent:<nid>`) keep it apart from jsacc's.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// Most commands moved by one router wake-up, handed out by one poll, or posted in one request.
const BATCH: usize = 128;

/// Seconds a poll waits for a command before answering 204.
const POLL_WAIT: u64 = 5;

/// A running bare relay. Dropped, it stops (its runtime ends, which closes its connections):
/// its router must not go on popping `cmds_queue` while jsacc is measured.
pub struct BareRelay {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BareRelay {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the HTTP handlers share: a connection for pushes, and one per agent for its blocking pop
/// (a BRPOP holds its connection, so parked polls cannot share one).
struct Relay {
    push: MultiplexedConnection,
    polls: Vec<Mutex<MultiplexedConnection>>,
}

fn agent_key(nid: u64) -> String {
    format!("bare:agent:{nid}")
}

fn id_of(raw: &str) -> Option<String> {
    serde_json::from_str::<Value>(raw)
        .ok()?
        .get("id")?
        .as_str()
        .map(str::to_owned)
}

/// Starts the relay and `agents` simulated agents (node ids 1..=agents) against the Redis at
/// `url`, on a runtime of its own thread.
pub fn start(url: &str, agents: u64) -> BareRelay {
    let url = url.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("bare relay runtime");
        rt.block_on(async move {
            let client = redis::Client::open(url.as_str()).expect("bare relay redis url");
            // No response timeout: a blocking pop waits longer than redis-rs's default.
            let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
            let connect = || async {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .expect("bare relay redis connection")
            };
            let mut polls = Vec::new();
            for _ in 0..agents {
                polls.push(Mutex::new(connect().await));
            }
            let relay = Arc::new(Relay {
                push: connect().await,
                polls,
            });
            tokio::spawn(route(connect().await, connect().await));
            let app = Router::new()
                .route("/poll/{nid}", get(poll))
                .route("/result", post(result))
                .with_state(relay);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bare relay listener");
            let port = listener.local_addr().expect("bare relay address").port();
            for nid in 1..=agents {
                tokio::spawn(agent(port, nid));
            }
            tx.send(port).expect("bare relay start");
            tokio::select! {
                served = axum::serve(listener, app) => served.expect("bare relay server"),
                _ = stopped => {}
            }
        });
    });
    BareRelay {
        port: rx.recv().expect("the bare relay did not start"),
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// The router: pops what clients pushed and pushes each command onto its agent's list. It ends
/// at the first Redis error, or with the relay.
async fn route(mut pop: MultiplexedConnection, mut push: MultiplexedConnection) {
    loop {
        let first: Option<(String, String)> = match redis::cmd("BRPOP")
            .arg("cmds_queue")
            .arg(1)
            .query_async(&mut pop)
            .await
        {
            Ok(popped) => popped,
            Err(_) => return,
        };
        let Some((_, first)) = first else { continue };
        let more: Option<Vec<String>> = redis::cmd("RPOP")
            .arg("cmds_queue")
            .arg(BATCH - 1)
            .query_async(&mut pop)
            .await
            .unwrap_or_default();
        let mut pipe = redis::pipe();
        for raw in std::iter::once(first).chain(more.unwrap_or_default()) {
            let nid = serde_json::from_str::<Value>(&raw)
                .ok()
                .and_then(|c| c.get("nid").and_then(Value::as_u64))
                .unwrap_or(0);
            pipe.cmd("LPUSH").arg(agent_key(nid)).arg(raw).ignore();
        }
        if pipe.query_async::<()>(&mut push).await.is_err() {
            return;
        }
    }
}

/// `GET /poll/<nid>`: up to [`BATCH`] commands, one per line, or 204 after [`POLL_WAIT`].
async fn poll(State(relay): State<Arc<Relay>>, Path(nid): Path<u64>) -> (StatusCode, String) {
    let Some(conn) = relay.polls.get((nid as usize).wrapping_sub(1)) else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    let mut conn = conn.lock().await;
    let key = agent_key(nid);
    let first: Option<(String, String)> = match redis::cmd("BRPOP")
        .arg(&key)
        .arg(POLL_WAIT)
        .query_async(&mut *conn)
        .await
    {
        Ok(popped) => popped,
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, String::new()),
    };
    let Some((_, first)) = first else {
        return (StatusCode::NO_CONTENT, String::new());
    };
    let more: Option<Vec<String>> = redis::cmd("RPOP")
        .arg(&key)
        .arg(BATCH - 1)
        .query_async(&mut *conn)
        .await
        .unwrap_or_default();
    let mut body = first;
    for raw in more.unwrap_or_default() {
        body.push('\n');
        body.push_str(&raw);
    }
    (StatusCode::OK, body)
}

/// `POST /result`: results, one per line, each pushed onto `cmds_queue_<id>`.
async fn result(State(relay): State<Arc<Relay>>, body: String) -> StatusCode {
    let mut pipe = redis::pipe();
    for line in body.lines() {
        if let Some(id) = id_of(line) {
            pipe.cmd("RPUSH")
                .arg(format!("cmds_queue_{id}"))
                .arg(line)
                .ignore();
        }
    }
    let mut push = relay.push.clone();
    match pipe.query_async::<()>(&mut push).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A simulated agent: polls, answers each command `pong`, posts a poll's results in one request
/// while it polls again.
async fn agent(port: u16, nid: u64) {
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("bare agent client");
    let poll_url = format!("http://127.0.0.1:{port}/poll/{nid}");
    let result_url = format!("http://127.0.0.1:{port}/result");
    loop {
        let Ok(resp) = http.get(&poll_url).send().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            return; // Redis is gone: the benchmark is over
        }
        if resp.status() != StatusCode::OK {
            continue;
        }
        let Ok(commands) = resp.text().await else {
            continue;
        };
        let mut results = String::new();
        for raw in commands.lines() {
            if let Some(id) = id_of(raw) {
                let answer = json!({"id": id, "gid": 1, "nid": nid, "cmd": "ping",
                    "data": "pong", "level": 0, "state": "OK", "time": 0});
                results.push_str(&answer.to_string());
                results.push('\n');
            }
        }
        let (http, url) = (http.clone(), result_url.clone());
        tokio::spawn(async move {
            let _ = http.post(url).body(results).send().await;
        });
    }
}
