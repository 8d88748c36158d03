//! The stack on TLS-only Redis topologies (DESIGN §11): `jsacc -r rediss+cluster://… --redis-ca …`
//! on a 6-node Redis Cluster and `jsacc -r rediss+sentinel://…/jsacc --redis-ca …` on a Sentinel
//! set, every process of which speaks only TLS with one self-signed certificate (its own CA).
//! `jsacc token add` takes the same flags; one agent runs an `execute` and a `ping`.

use std::time::{Duration, Instant};

use redis::ConnectionLike;
use serde_json::{json, Value};
use tests::{
    command, execute, Agent, Controller, ControllerOpts, RedisCluster, RedisTarget, SentinelSet,
};

const T: Duration = Duration::from_secs(20);

/// `LPUSH cmds_queue <cmd>`, then `BLPOP cmds_queue_<id>` until a result comes or `timeout`.
fn run(conn: &mut impl ConnectionLike, cmd: &Value, timeout: Duration) -> Option<Value> {
    let _: i64 = redis::cmd("LPUSH")
        .arg("cmds_queue")
        .arg(cmd.to_string())
        .query(conn)
        .expect("LPUSH cmds_queue");
    let key = format!("cmds_queue_{}", cmd["id"].as_str().expect("id"));
    let got: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(&key)
        .arg(timeout.as_secs_f64())
        .query(conn)
        .expect("BLPOP");
    got.map(|(_, v)| serde_json::from_str(&v).expect("result is JSON"))
}

/// Waits until agent gid:nid has said hello (it is in `agents`).
fn wait_online(conn: &mut impl ConnectionLike, gid: u64, nid: u64, what: impl Fn() -> String) {
    let start = Instant::now();
    loop {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg("agents")
            .arg(format!("{gid}:{nid}"))
            .query(conn)
            .expect("ZSCORE agents");
        if score.is_some() {
            return;
        }
        assert!(
            start.elapsed() < T,
            "agent {gid}:{nid} not online within {T:?}\n{}",
            what()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A controller and agent 1:1 on `redis` (through `conn`, a TLS connection to it): `/bin/echo
/// hi` and a `ping` each get their `OK` result.
fn echo_and_ping(redis: &impl RedisTarget, conn: &mut impl ConnectionLike) {
    let topology = redis.topology();
    assert!(
        redis.url().starts_with(&format!("rediss+{topology}://")),
        "{}",
        redis.url()
    );
    assert!(
        redis.jsacc_args().iter().any(|a| a == "--redis-ca"),
        "{:?}",
        redis.jsacc_args()
    );
    let controller = Controller::start(redis, ControllerOpts::default());
    let agent = Agent::start(redis, &controller, 1, 1, &[]);
    let logs = || {
        format!(
            "--- jsacc ---\n{}\n--- jsagent ---\n{}",
            controller.logs(),
            agent.logs()
        )
    };
    wait_online(conn, 1, 1, logs);

    let echo = execute(1, 1, "/bin/echo", &["hi"]);
    let r = run(conn, &echo, T)
        .unwrap_or_else(|| panic!("{topology}: no result of {echo}\n{}", logs()));
    assert_eq!(r["state"], "OK", "{topology}: {r}");
    assert_eq!(r["streams"][0], json!("hi\n"), "{topology}: {r}");

    let ping = command(1, 1, "ping", json!({}));
    let r = run(conn, &ping, T)
        .unwrap_or_else(|| panic!("{topology}: no result of {ping}\n{}", logs()));
    assert_eq!(
        (r["state"].as_str(), r["data"].as_str()),
        (Some("OK"), Some("pong")),
        "{topology}: {r}"
    );
}

#[test]
fn topology_tls_cluster_runs_echo_and_ping() {
    let rc = RedisCluster::start_tls();
    let mut conn = rc
        .cluster_client()
        .get_connection()
        .expect("TLS cluster connection");
    echo_and_ping(&rc, &mut conn);
}

#[test]
fn topology_tls_sentinel_runs_echo_and_ping() {
    let set = SentinelSet::start_tls();
    let mut conn = set.client().blocking();
    echo_and_ping(&set, &mut conn);
}
