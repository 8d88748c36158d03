//! A client that knows only DESIGN §3–§4: `LPUSH cmds_queue`, `BLPOP cmds_queue_<id>`.
//!
//! It speaks to any of the three topologies of DESIGN §11: a standalone server, the primary the
//! sentinels name (asked again on every connection), or a Redis Cluster (redis-rs's cluster
//! client, which follows `MOVED`). Every command it sends names one key, or several in one slot,
//! so a cluster takes it. Its operations retry across a failover (connection refused or dropped,
//! `READONLY`, `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`, `NOREPLICAS`, `LOADING`) for up to
//! [`RETRY_FOR`].

use std::time::{Duration, Instant};

use controller::target::{Target, Topology};
use redis::ConnectionLike;
use serde_json::Value;

/// How long an operation keeps retrying transient errors.
pub const RETRY_FOR: Duration = Duration::from_secs(60);

enum Backend {
    Single(redis::Client),
    Sentinel {
        /// `host:port` of each sentinel.
        sentinels: Vec<String>,
        master: String,
    },
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        /// `host:port` of each seed node.
        nodes: Vec<String>,
    },
}

pub struct RedisClient {
    backend: Backend,
}

impl From<redis::Client> for RedisClient {
    fn from(client: redis::Client) -> RedisClient {
        RedisClient {
            backend: Backend::Single(client),
        }
    }
}

/// Whether an error is one a failover causes and a retry can get past.
pub fn transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.kind(),
            redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::MasterNameNotFoundBySentinel
                | redis::ErrorKind::Server(
                    redis::ServerErrorKind::ReadOnly
                        | redis::ServerErrorKind::ClusterDown
                        | redis::ServerErrorKind::TryAgain
                        | redis::ServerErrorKind::MasterDown
                        | redis::ServerErrorKind::BusyLoading
                        | redis::ServerErrorKind::Moved
                        | redis::ServerErrorKind::Ask
                )
        )
        || matches!(
            e.code(),
            Some(
                "READONLY"
                    | "CLUSTERDOWN"
                    | "TRYAGAIN"
                    | "MASTERDOWN"
                    | "NOREPLICAS"
                    | "LOADING"
                    | "MOVED"
                    | "ASK"
                    | "UNBLOCKED"
            )
        )
}

/// A connection of a [`RedisClient`]: to one server, or to a whole cluster.
pub enum Conn {
    Plain(redis::Connection),
    Cluster {
        conn: Box<redis::cluster::ClusterConnection>,
        /// A plain connection to one node, made for [`Conn::as_pubsub`].
        node: Option<redis::Connection>,
        seeds: Vec<String>,
    },
}

impl ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster { conn, .. } => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster { conn, .. } => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Plain(c) => c.req_command(cmd),
            Conn::Cluster { conn, .. } => conn.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster { conn, .. } => conn.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Conn::Plain(c) => c.supports_pipelining(),
            Conn::Cluster { conn, .. } => conn.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Conn::Plain(c) => c.check_connection(),
            Conn::Cluster { conn, .. } => conn.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::Plain(c) => c.is_open(),
            Conn::Cluster { conn, .. } => conn.is_open(),
        }
    }
}

impl Conn {
    /// A subscriber. On a cluster, a plain connection to one node: `PUBLISH` reaches the
    /// subscribers of every node.
    pub fn as_pubsub(&mut self) -> redis::PubSub<'_> {
        match self {
            Conn::Plain(c) => c.as_pubsub(),
            Conn::Cluster { node, seeds, .. } => {
                if node.is_none() {
                    *node = Some(
                        seeds
                            .iter()
                            .find_map(|s| plain(&format!("redis://{s}")).ok())
                            .expect("a cluster node to subscribe on"),
                    );
                }
                node.as_mut().expect("just made").as_pubsub()
            }
        }
    }

    /// Read timeout of the connection(s) (`None`: block forever).
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> redis::RedisResult<()> {
        match self {
            Conn::Plain(c) => c.set_read_timeout(dur),
            Conn::Cluster { conn, .. } => conn.set_read_timeout(dur),
        }
    }
}

fn plain(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))
}

impl RedisClient {
    /// A client of `host:port`, `redis://…`, `redis+sentinel://s1,s2,…/<master>` or
    /// `redis+cluster://n1,n2,…` (the plain-text forms of DESIGN §11; TLS only for one server).
    pub fn new(url: &str) -> RedisClient {
        // The controller's own parser of `-r`: the tests read a URL as jsacc does.
        let target = Target::parse(url).unwrap_or_else(|e| panic!("redis url {url}: {e}"));
        let hosts: Vec<String> = target
            .nodes
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        let backend = match target.topology {
            Topology::Sentinel => Backend::Sentinel {
                sentinels: hosts,
                master: target.master.clone().expect("a master name in the URL"),
            },
            Topology::Cluster => {
                let client = redis::cluster::ClusterClient::builder(
                    hosts.iter().map(|n| format!("redis://{n}")),
                )
                .connection_timeout(Duration::from_secs(2))
                .retries(20)
                .build()
                .expect("cluster client");
                Backend::Cluster {
                    client: Box::new(client),
                    nodes: hosts,
                }
            }
            Topology::Standalone if url.contains("://") => {
                Backend::Single(redis::Client::open(url).expect("redis url"))
            }
            Topology::Standalone => {
                Backend::Single(redis::Client::open(format!("redis://{url}")).expect("redis url"))
            }
        };
        RedisClient { backend }
    }

    /// `standalone`, `sentinel` or `cluster`.
    pub fn topology(&self) -> &'static str {
        match self.backend {
            Backend::Single(_) => "standalone",
            Backend::Sentinel { .. } => "sentinel",
            Backend::Cluster { .. } => "cluster",
        }
    }

    /// One attempt at a connection: sentinel targets ask the sentinels for the primary and check
    /// it says `ROLE` master.
    pub fn try_connect(&self) -> redis::RedisResult<Conn> {
        match &self.backend {
            Backend::Single(client) => client.get_connection().map(Conn::Plain),
            Backend::Cluster { client, nodes } => Ok(Conn::Cluster {
                conn: Box::new(client.get_connection()?),
                node: None,
                seeds: nodes.clone(),
            }),
            Backend::Sentinel { sentinels, master } => {
                let mut last = None;
                for s in sentinels {
                    let addr: redis::RedisResult<Option<(String, u16)>> =
                        plain(&format!("redis://{s}")).and_then(|mut c| {
                            c.set_read_timeout(Some(Duration::from_secs(2)))?;
                            redis::cmd("SENTINEL")
                                .arg("GET-MASTER-ADDR-BY-NAME")
                                .arg(master)
                                .query(&mut c)
                        });
                    let (host, port) = match addr {
                        Ok(Some(a)) => a,
                        Ok(None) => {
                            last = Some(redis::RedisError::from((
                                redis::ErrorKind::MasterNameNotFoundBySentinel,
                                "no primary named",
                            )));
                            continue;
                        }
                        Err(e) => {
                            last = Some(e);
                            continue;
                        }
                    };
                    let conn = plain(&format!("redis://{host}:{port}")).and_then(|mut c| {
                        c.set_read_timeout(Some(Duration::from_secs(2)))?;
                        let role: redis::Value = redis::cmd("ROLE").query(&mut c)?;
                        let is_master = matches!(&role, redis::Value::Array(v)
                            if v.first().is_some_and(|r| redis::from_redis_value_ref::<String>(r).ok().as_deref() == Some("master")));
                        if !is_master {
                            return Err(redis::RedisError::from((
                                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                                "not the primary (yet)",
                            )));
                        }
                        c.set_read_timeout(None)?;
                        Ok(c)
                    });
                    match conn {
                        Ok(c) => return Ok(Conn::Plain(c)),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::EmptySentinelList, "no sentinels"))
                }))
            }
        }
    }

    /// A synchronous connection without a read timeout (for `BLPOP`); retried across a failover.
    pub fn blocking(&self) -> Conn {
        let start = Instant::now();
        loop {
            match self.try_connect() {
                Ok(c) => return c,
                Err(e) if start.elapsed() < RETRY_FOR => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("no redis connection within {RETRY_FOR:?}: {e}"),
            }
        }
    }

    /// A connection, or `None` while the server is not up yet.
    pub fn blocking_checked(&self) -> Option<Conn> {
        self.try_connect().ok()
    }

    /// Runs `op` on a connection until it does not fail with a [`transient`] error (a new
    /// connection each retry), for up to [`RETRY_FOR`]; panics with `what` on any other error.
    pub fn retrying<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> T {
        let start = Instant::now();
        let mut conn: Option<Conn> = None;
        loop {
            let res = match conn.as_mut() {
                Some(c) => op(c),
                None => match self.try_connect() {
                    Ok(c) => op(conn.insert(c)),
                    Err(e) => Err(e),
                },
            };
            match res {
                Ok(v) => return v,
                Err(e) if transient(&e) && start.elapsed() < RETRY_FOR => {
                    conn = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }

    /// `cmd` (one key, or keys of one slot), retried across a failover.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.retrying(&format!("{cmd:?}"), |c| cmd.query(c))
    }

    /// A list of JSON documents, without consuming it.
    fn json_list(&self, key: &str) -> Vec<Value> {
        let items: Vec<String> = self.query(redis::cmd("LRANGE").arg(key).arg(0).arg(-1));
        items
            .iter()
            .map(|s| serde_json::from_str(s).expect("JSON"))
            .collect()
    }

    pub fn push(&self, cmd: &Value) {
        self.push_raw(&cmd.to_string());
    }

    /// `LPUSH cmds_queue raw`, retried across a failover (a client's identical re-push is
    /// dropped by the controller, DESIGN §2).
    pub fn push_raw(&self, raw: &str) {
        let _: i64 = self.query(redis::cmd("LPUSH").arg("cmds_queue").arg(raw));
    }

    /// One attempt at `LPUSH cmds_queue raw` then `WAIT replicas timeout` on the same
    /// connection to the primary holding `cmds_queue`: how many replicas acknowledged it.
    pub fn try_push_acked(
        &self,
        raw: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        let mut conn = self.try_connect_for_key("cmds_queue")?;
        let _: i64 = redis::cmd("LPUSH")
            .arg("cmds_queue")
            .arg(raw)
            .query(&mut conn)?;
        redis::cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis() as u64)
            .query(&mut conn)
    }

    /// A plain connection to the primary serving `key` (on a cluster: the node whose slots hold
    /// it as the cluster says now; elsewhere: the server or primary).
    pub fn try_connect_for_key(&self, key: &str) -> redis::RedisResult<redis::Connection> {
        match &self.backend {
            Backend::Cluster { nodes, .. } => {
                let mut last = None;
                for n in nodes {
                    let found = plain(&format!("redis://{n}")).and_then(|mut c| {
                        c.set_read_timeout(Some(Duration::from_secs(2)))?;
                        let slot: u16 = redis::cmd("CLUSTER")
                            .arg("KEYSLOT")
                            .arg(key)
                            .query(&mut c)?;
                        let shards: Vec<redis::Value> =
                            redis::cmd("CLUSTER").arg("SLOTS").query(&mut c)?;
                        for shard in shards {
                            let redis::Value::Array(items) = shard else {
                                continue;
                            };
                            if items.len() < 3 {
                                continue;
                            }
                            let a: u16 = redis::from_redis_value_ref(&items[0])?;
                            let b: u16 = redis::from_redis_value_ref(&items[1])?;
                            if a <= slot && slot <= b {
                                let redis::Value::Array(primary) = &items[2] else {
                                    continue;
                                };
                                let host: String = redis::from_redis_value_ref(&primary[0])?;
                                let port: u16 = redis::from_redis_value_ref(&primary[1])?;
                                return Ok((host, port));
                            }
                        }
                        Err(redis::RedisError::from((
                            redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                            "slot not served",
                        )))
                    });
                    match found.and_then(|(h, p)| {
                        let mut c = plain(&format!("redis://{h}:{p}"))?;
                        let role: redis::Value = redis::cmd("ROLE").query(&mut c)?;
                        let is_master = matches!(&role, redis::Value::Array(v)
                            if v.first().is_some_and(|r| redis::from_redis_value_ref::<String>(r).ok().as_deref() == Some("master")));
                        if is_master {
                            Ok(c)
                        } else {
                            Err(redis::RedisError::from((
                                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                                "not a primary",
                            )))
                        }
                    }) {
                        Ok(c) => return Ok(c),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("seed nodes"))
            }
            _ => match self.try_connect()? {
                Conn::Plain(c) => Ok(c),
                Conn::Cluster { .. } => unreachable!("not a cluster"),
            },
        }
    }

    /// Waits for the next result of a job; `None` after `timeout`.
    pub fn result(&self, id: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let key = format!("cmds_queue_{id}");
        let got: Option<(String, String)> = self.retrying("BLPOP", |c| {
            let left = deadline.saturating_duration_since(Instant::now());
            // BLPOP 0 would block forever: wait at least a millisecond.
            redis::cmd("BLPOP")
                .arg(&key)
                .arg(left.as_secs_f64().max(0.001))
                .query(c)
        });
        got.map(|(_, v)| serde_json::from_str(&v).expect("result is JSON"))
    }

    /// Pushes a command and waits for its first result.
    pub fn run(&self, cmd: &Value, timeout: Duration) -> Value {
        self.push(cmd);
        let id = cmd["id"].as_str().expect("command has an id");
        self.result(id, timeout)
            .unwrap_or_else(|| panic!("no result for {cmd} within {timeout:?}"))
    }

    /// All results of a job currently in its list, without consuming them.
    pub fn results(&self, id: &str) -> Vec<Value> {
        self.json_list(&format!("cmds_queue_{id}"))
    }

    pub fn job_field(&self, id: &str, field: &str) -> Option<String> {
        self.query(redis::cmd("HGET").arg(format!("job:{id}")).arg(field))
    }

    /// Whether agent gid:nid has said hello (it is in `agents`).
    pub fn online(&self, gid: u64, nid: u64) -> bool {
        let score: Option<f64> = self
            .try_connect()
            .and_then(|mut c| {
                redis::cmd("ZSCORE")
                    .arg("agents")
                    .arg(format!("{gid}:{nid}"))
                    .query(&mut c)
            })
            .unwrap_or(None);
        score.is_some()
    }

    /// A hash field holding JSON, parsed.
    pub fn hget_json(&self, key: &str, field: &str) -> Option<Value> {
        let raw: Option<String> = self.query(redis::cmd("HGET").arg(key).arg(field));
        raw.map(|r| serde_json::from_str(&r).expect("JSON"))
    }

    /// The entries of a stream as (field → value) maps, oldest first.
    pub fn stream(&self, key: &str) -> Vec<std::collections::HashMap<String, String>> {
        let reply: redis::streams::StreamRangeReply =
            self.query(redis::cmd("XRANGE").arg(key).arg("-").arg("+"));
        reply
            .ids
            .into_iter()
            .map(|entry| {
                entry
                    .map
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value::<String>(v).expect("text")))
                    .collect()
            })
            .collect()
    }

    pub fn dead_letters(&self) -> Vec<Value> {
        self.json_list("cmds_queue:dead")
    }

    pub fn llen(&self, key: &str) -> u64 {
        self.query(redis::cmd("LLEN").arg(key))
    }
}
