//! Connections to a [`Target`]: one standalone server, the primary of a Sentinel set, or a
//! Redis Cluster, behind one cloneable [`Conn`] that the rest of the controller uses as any
//! redis-rs connection (scripts, pipelines, commands).
//!
//! - Standalone: redis-rs's reconnecting `ConnectionManager`.
//! - Sentinel: a multiplexed connection to the primary the sentinels name. An error that says
//!   the primary is gone or demoted (I/O, refused, timeout, `READONLY`, `MASTERDOWN`, `LOADING`)
//!   makes the next request ask the sentinels again; a command that Redis refused without
//!   running it (`READONLY`, `MASTERDOWN`, `LOADING`) is sent once more to the new primary.
//!   Nothing else is re-sent: a write whose answer was lost is the caller's to retry, and every
//!   caller's writes are idempotent.
//! - Cluster: redis-rs's `cluster_async` connection (MOVED/ASK, slot refresh). A pipeline that
//!   is not atomic and holds keys of several slots is split here by slot, each part pipelined
//!   to its node, and the answers put back in order: callers write plain pipelines.
//!
//! [`Conn::confirm_each`] is `WAIT` on the connection that made the writes (on a cluster on
//! each primary written to), so a write is acknowledged only once replicas hold it. [`Redis::subscribe`] gives one channel's messages, following failovers the same way.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};
use tokio::sync::Mutex;

use crate::target::{Target, Topology};

/// Longest wait for a TCP (and TLS) connection to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach Redis; makes connections and subscriptions.
pub struct Redis {
    target: Target,
    ca: Option<Vec<u8>>,
    cluster: Option<ClusterClient>,
}

impl Redis {
    /// Whether every key is on one server (not a cluster): a script may then name keys of
    /// different slots, and one script can do for a batch what a cluster needs one a slot for.
    pub fn one_server(&self) -> bool {
        self.cluster.is_none()
    }

    /// Checks the target and the CA file; connects nothing yet.
    pub fn open(target: Target, ca: Option<&Path>) -> anyhow::Result<Redis> {
        use anyhow::Context;
        let ca = ca
            .map(|p| {
                std::fs::read(p).with_context(|| format!("cannot read --redis-ca {}", p.display()))
            })
            .transpose()?;
        if ca.is_some() && !target.tls {
            anyhow::bail!("--redis-ca is for TLS targets (rediss://, rediss+sentinel://, rediss+cluster://), not {target}");
        }
        let cluster = match target.topology {
            Topology::Cluster => Some(cluster_client(&target, ca.as_deref(), None)?),
            _ => None,
        };
        // Fails early on an address redis-rs cannot use.
        node_client(&target, &target.nodes[0], ca.as_deref())
            .with_context(|| format!("bad redis target {target}"))?;
        Ok(Redis {
            target,
            ca,
            cluster,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A connection whose requests may take up to `response_timeout` (blocking commands
    /// need more than their own timeout).
    pub async fn connect(&self, response_timeout: Duration) -> RedisResult<Conn> {
        self.connection(response_timeout, false).await
    }

    /// Like [`Redis::connect`], for writes confirmed with `WAIT` ([`Conn::pin`]): on a single
    /// server too a connection that is never silently reconnected between a write and its
    /// `WAIT` (a reconnecting `ConnectionManager` could send the `WAIT` on a fresh socket, where
    /// it confirms nothing).
    pub async fn connect_pinnable(&self, response_timeout: Duration) -> RedisResult<Conn> {
        self.connection(response_timeout, true).await
    }

    async fn connection(&self, response_timeout: Duration, pinnable: bool) -> RedisResult<Conn> {
        match self.target.topology {
            Topology::Standalone if !pinnable => {
                let client = node_client(&self.target, &self.target.nodes[0], self.ca.as_deref())?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(response_timeout))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(2);
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            Topology::Standalone | Topology::Sentinel => {
                let conn = PrimaryConn {
                    inner: Arc::new(PrimaryInner {
                        target: self.target.clone(),
                        ca: self.ca.clone(),
                        response_timeout,
                        current: Mutex::new(None),
                        generations: Default::default(),
                    }),
                };
                conn.primary().await?;
                Ok(Conn::Primary(conn))
            }
            Topology::Cluster => {
                let client = match (&self.cluster, response_timeout) {
                    (Some(c), t) if t <= Duration::from_secs(5) => c.clone(),
                    _ => cluster_client(&self.target, self.ca.as_deref(), Some(response_timeout))
                        .map_err(|e| io_error(&e.to_string()))?,
                };
                Ok(Conn::Cluster(
                    client.get_async_connection().await?,
                    Arc::new(SlotOwners::default()),
                ))
            }
        }
    }

    /// The payloads published on `channel`, from one subscription. The stream ends when the
    /// subscription is lost (the caller subscribes again; messages in between are missed).
    pub async fn subscribe(&self, channel: &str) -> RedisResult<BoxStream<'static, Vec<u8>>> {
        let client = match self.target.topology {
            Topology::Standalone => {
                node_client(&self.target, &self.target.nodes[0], self.ca.as_deref())?
            }
            Topology::Sentinel => resolve_primary(&self.target, self.ca.as_deref()).await?.0,
            // PUBLISH reaches every node of a cluster: any node that answers will do.
            Topology::Cluster => self.any_cluster_node().await?,
        };
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|m| async move { m.get_payload::<Vec<u8>>().ok() })
            .boxed())
    }

    /// A client of the first cluster node that answers: the seeds, then the nodes they know.
    async fn any_cluster_node(&self) -> RedisResult<redis::Client> {
        let mut last = io_error("no cluster node answers");
        let mut nodes = self.target.nodes.clone();
        if let Some(cluster) = &self.cluster {
            // The whole cluster as it is now, so a subscription survives dead seeds.
            if let Ok(mut conn) = cluster.get_async_connection().await {
                if let Ok(text) = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async::<String>(&mut conn)
                    .await
                {
                    nodes.extend(cluster_nodes(&text));
                }
            }
        }
        for node in &nodes {
            let client = node_client(&self.target, node, self.ca.as_deref())?;
            match ping(&client).await {
                Ok(()) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Addresses of the connected nodes in `CLUSTER NODES` output.
fn cluster_nodes(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter(|l| !l.contains("fail") && !l.contains("disconnected"))
        .filter_map(|l| {
            // `<id> <ip:port@cport[,hostname]> <flags> …`
            let addr = l.split_whitespace().nth(1)?.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

async fn ping(client: &redis::Client) -> RedisResult<()> {
    let mut conn = short_lived(client).await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await
}

/// A connection for a few quick questions (a node's health, the sentinels' primary): it gives
/// up after 2 s without an answer, so one dead node does not stall the search for a live one.
async fn short_lived(client: &redis::Client) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_secs(2)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

fn node_client(
    target: &Target,
    node: &(String, u16),
    ca: Option<&[u8]>,
) -> RedisResult<redis::Client> {
    let url = target.node_url(node);
    match ca {
        None => redis::Client::open(url),
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        ),
    }
}

fn cluster_client(
    target: &Target,
    ca: Option<&[u8]>,
    response_timeout: Option<Duration>,
) -> anyhow::Result<ClusterClient> {
    let urls: Vec<String> = target.nodes.iter().map(|n| target.node_url(n)).collect();
    // No retries inside redis-rs: it would send a command again after a lost answer (a timeout,
    // a reset connection) although Redis may have run it: a `WAIT` re-sent on a fresh
    // connection confirms nothing, a `BLMOVE` re-sent moves a second command. A `MOVED` still
    // refreshes the slot map; the failed request is retried by its caller (the router's replay,
    // the agent's post), whose steps are idempotent.
    let mut builder = ClusterClient::builder(urls)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(response_timeout.unwrap_or(Duration::from_secs(5)))
        .retries(0);
    if let Some(ca) = ca {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.to_vec()),
        });
    }
    Ok(builder.build()?)
}

fn io_error(message: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        message.to_owned(),
    ))
}

/// Asks the sentinels, in turn, for the primary of the target's master name, and checks that
/// it says it is one (a sentinel may not have seen a failover yet).
async fn resolve_primary(
    target: &Target,
    ca: Option<&[u8]>,
) -> RedisResult<(redis::Client, (String, u16))> {
    let master = target.master.as_deref().unwrap_or_default();
    let mut last = io_error(&format!("no sentinel of {target} answers"));
    for sentinel in &target.nodes {
        let attempt = async {
            let mut conn = sentinel_connection(target, sentinel, ca).await?;
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(master)
                .query_async(&mut conn)
                .await?;
            let addr = addr.ok_or_else(|| {
                io_error(&format!(
                    "sentinel {}:{} does not know master `{master}`",
                    sentinel.0, sentinel.1
                ))
            })?;
            let primary = node_client(target, &addr, ca)?;
            let mut pconn = short_lived(&primary).await?;
            let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut pconn).await?;
            match role.first() {
                Some(Value::BulkString(r)) if r == b"master" => Ok((primary, addr)),
                _ => Err(RedisError::from((
                    ErrorKind::Server(ServerErrorKind::ReadOnly),
                    "the sentinel's primary is not a primary (yet)",
                ))),
            }
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A connection to one sentinel. The URL's credentials are the data nodes'; sentinels often
/// run without a password (then `AUTH` is refused) and sometimes with the same one: with the
/// credentials first, and once more without them when the sentinel refuses them.
async fn sentinel_connection(
    target: &Target,
    sentinel: &(String, u16),
    ca: Option<&[u8]>,
) -> RedisResult<MultiplexedConnection> {
    // Sentinels have no databases.
    let with_auth = Target {
        db: 0,
        ..target.clone()
    };
    match short_lived(&node_client(&with_auth, sentinel, ca)?).await {
        Err(e) if with_auth.password.is_some() && refused_auth(&e) => {
            let without = Target {
                username: None,
                password: None,
                ..with_auth
            };
            short_lived(&node_client(&without, sentinel, ca)?).await
        }
        other => other,
    }
}

/// The server refused the credentials, or has none to check them against.
fn refused_auth(e: &RedisError) -> bool {
    let text = e.to_string();
    e.kind() == ErrorKind::AuthenticationFailed
        || text.contains("AUTH")
        || text.contains("WRONGPASS")
        || text.contains("without any password")
}

/// A connection to the current primary of a Sentinel set; clones share it.
#[derive(Clone)]
pub struct PrimaryConn {
    inner: Arc<PrimaryInner>,
}

struct PrimaryInner {
    target: Target,
    ca: Option<Vec<u8>>,
    response_timeout: Duration,
    /// The primary's connection and its generation; `None` after an error that may mean a
    /// failover. A generation is forgotten only by a request that failed on it, so the late
    /// errors of a dead connection do not throw away the new one.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generations: std::sync::atomic::AtomicU64,
}

impl PrimaryConn {
    /// The primary's connection and its generation, asking the sentinels first when there is
    /// none (a single server: connecting to it again).
    async fn primary(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut current = self.inner.current.lock().await;
        if let Some(conn) = current.as_ref() {
            return Ok(conn.clone());
        }
        let target = &self.inner.target;
        let (client, addr) = match target.topology {
            Topology::Sentinel => resolve_primary(target, self.inner.ca.as_deref()).await?,
            _ => (
                node_client(target, &target.nodes[0], self.inner.ca.as_deref())?,
                target.nodes[0].clone(),
            ),
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.inner.response_timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        if target.topology == Topology::Sentinel {
            tracing::info!(primary = %format!("{}:{}", addr.0, addr.1), "connected to the sentinels' primary");
        }
        let generation = self
            .inner
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *current = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// After a request on a pinned connection: an answer that may mean a failover makes the
    /// next request ask the sentinels.
    async fn after<T>(
        &self,
        generation: u64,
        answer: &RedisResult<T>,
        refused: impl Fn(&T) -> bool,
    ) {
        let failover = match answer {
            Ok(v) => refused(v),
            Err(e) => maybe_failover(e),
        };
        if failover {
            self.forget(generation).await;
        }
    }

    /// Forgets the primary's connection of `generation`, so the next request asks the sentinels.
    async fn forget(&self, generation: u64) {
        let mut current = self.inner.current.lock().await;
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// Runs `request` on the primary; after an error that may mean a failover the primary is
    /// looked up again, and a command the old primary refused unrun is sent to the new one.
    async fn run<T>(
        &self,
        request: impl Fn(MultiplexedConnection) -> BoxFuture<'static, RedisResult<T>>,
        refused: impl Fn(&T) -> bool,
    ) -> RedisResult<T> {
        for attempt in 0..2 {
            let (generation, conn) = self.primary().await?;
            match request(conn).await {
                Ok(v) if attempt == 0 && refused(&v) => self.forget(generation).await,
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && not_run(&e) => self.forget(generation).await,
                Err(e) => {
                    if maybe_failover(&e) {
                        self.forget(generation).await;
                    }
                    return Err(e);
                }
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// Whether `e` says Redis cannot be reached or cannot take writes right now (down, failing
/// over, resharding, replicas behind) — worth a retry later — rather than that it refused this
/// request (a script error, a key of the wrong type), which a retry will not change.
pub fn is_unavailable(e: &RedisError) -> bool {
    maybe_failover(e)
        || is_not_replicated(e)
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown)
        )
}

/// The primary refused the command without running it: it is a replica now, or not ready.
fn not_run(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading
        )
    ) || e.is_connection_refusal()
}

/// The connection may be to a dead or demoted primary.
fn maybe_failover(e: &RedisError) -> bool {
    not_run(e) || e.is_io_error() || e.is_timeout() || e.is_connection_dropped()
}

fn refused_value(v: &Value) -> bool {
    match v {
        Value::ServerError(e) => matches!(
            e.kind(),
            Some(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            )
        ),
        _ => false,
    }
}

/// A connection of any topology; cheap to clone (clones share the socket).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Primary(PrimaryConn),
    Cluster(ClusterConnection, Arc<SlotOwners>),
    /// One primary's connection (and its generation), never switched to another primary or
    /// reconnected: see [`Conn::pin`].
    Pinned(PrimaryConn, u64, MultiplexedConnection),
}

impl Conn {
    /// This connection, held to the primary it reaches now. Writes followed by
    /// [`Conn::confirm_each`] must be made on a pinned connection: `WAIT` counts the replicas
    /// that hold the writes of its own connection, and a `WAIT` sent to a new primary after a
    /// failover would confirm writes that the old one took to its grave. An error that may mean
    /// a failover still makes the next [`Conn::pin`] ask the sentinels.
    pub async fn pin(&self) -> RedisResult<Conn> {
        match self {
            Conn::Primary(s) => {
                let (generation, conn) = s.primary().await?;
                Ok(Conn::Pinned(s.clone(), generation, conn))
            }
            other => Ok(other.clone()),
        }
    }

    /// Which of `writes` (each the keys one piece of work wrote on this connection) at least
    /// `n` replicas hold, waiting up to `timeout` (`WAIT`). On a single primary one `WAIT`
    /// answers for all. On a cluster one `WAIT` goes to each primary that owns a written slot,
    /// and a piece of work is confirmed when every primary it wrote to is: a shard without a
    /// replica holds up only the work that touched it. `n == 0` confirms everything.
    pub async fn confirm_each(
        &mut self,
        n: usize,
        timeout: Duration,
        writes: &[Vec<String>],
    ) -> RedisResult<Vec<bool>> {
        if n == 0 || writes.is_empty() {
            return Ok(vec![true; writes.len()]);
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(n).arg(timeout.as_millis() as u64);
        let Conn::Cluster(cluster, owners) = self else {
            let got: usize = wait.query_async(self).await?;
            return Ok(vec![got >= n; writes.len()]);
        };
        let map = owners.get(cluster).await?;
        let node_of = |key: &String| map.owner(slot_of(key.as_bytes()));
        let nodes: HashSet<(String, u16)> = writes.iter().flatten().filter_map(node_of).collect();
        let waits = nodes.into_iter().map(|(host, port)| {
            let (mut conn, wait) = (cluster.clone(), wait.clone());
            async move {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port,
                });
                let got = match conn.route_command(wait, routing).await {
                    Ok(answer) => redis::from_redis_value::<usize>(answer).unwrap_or(0),
                    // A dead or demoted primary confirms nothing; its work is tried again.
                    Err(e) => {
                        tracing::debug!(node = %format!("{host}:{port}"), error = %e, "WAIT failed");
                        0
                    }
                };
                ((host, port), got >= n)
            }
        });
        let confirmed: HashMap<(String, u16), bool> =
            futures::future::join_all(waits).await.into_iter().collect();
        if confirmed.values().any(|ok| !ok) {
            owners.forget();
        }
        Ok(writes
            .iter()
            .map(|keys| {
                keys.iter()
                    .all(|k| node_of(k).is_some_and(|node| confirmed.get(&node) == Some(&true)))
            })
            .collect())
    }
}

/// The slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of its hash tag (the text
/// between the first `{` and the next `}`, when not empty) or of the whole key, mod 16384.
pub fn slot_of(key: &[u8]) -> u16 {
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % 16384
}

/// How long the primaries of the slots are trusted before `CLUSTER SLOTS` is asked again.
const SLOT_MAP_TTL: Duration = Duration::from_secs(5);

/// Which primary owns each slot: ranges `(first, last, host, port)` from `CLUSTER SLOTS`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SlotMap(Vec<(u16, u16, String, u16)>);

impl SlotMap {
    /// Parses the answer to `CLUSTER SLOTS`: `[[first, last, [host, port, id, …], replicas…], …]`.
    fn parse(answer: Value) -> SlotMap {
        let Value::Array(ranges) = answer else {
            return SlotMap::default();
        };
        let int = |v: &Value| match v {
            Value::Int(i) => u16::try_from(*i).ok(),
            _ => None,
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        SlotMap(
            ranges
                .iter()
                .filter_map(|range| {
                    let Value::Array(fields) = range else {
                        return None;
                    };
                    let Value::Array(primary) = fields.get(2)? else {
                        return None;
                    };
                    let (first, last) = (int(fields.first()?)?, int(fields.get(1)?)?);
                    Some((first, last, text(primary.first()?)?, int(primary.get(1)?)?))
                })
                .collect(),
        )
    }

    fn owner(&self, slot: u16) -> Option<(String, u16)> {
        self.0
            .iter()
            .find(|(first, last, _, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, host, port)| (host.clone(), *port))
    }
}

/// The [`SlotMap`] of a cluster, asked for at most every [`SLOT_MAP_TTL`] (and again after a
/// `WAIT` that fell short: a failover may have moved slots).
#[derive(Default)]
pub struct SlotOwners {
    // A std mutex: never held across an `.await`.
    cached: std::sync::Mutex<Option<(tokio::time::Instant, Arc<SlotMap>)>>,
}

impl SlotOwners {
    async fn get(&self, conn: &mut ClusterConnection) -> RedisResult<Arc<SlotMap>> {
        if let Some((_, map)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < SLOT_MAP_TTL)
        {
            return Ok(map.clone());
        }
        let answer: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        let map = Arc::new(SlotMap::parse(answer));
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((tokio::time::Instant::now(), map.clone()));
        Ok(map)
    }

    fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, _) => c.req_packed_command(cmd),
            Conn::Pinned(s, generation, c) => async move {
                let answer = c.req_packed_command(cmd).await;
                s.after(*generation, &answer, refused_value).await;
                answer
            }
            .boxed(),
            Conn::Primary(s) => {
                let cmd = cmd.clone();
                async move {
                    s.run(
                        move |mut c| {
                            let cmd = cmd.clone();
                            async move { c.req_packed_command(&cmd).await }.boxed()
                        },
                        refused_value,
                    )
                    .await
                }
                .boxed()
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Pinned(s, generation, c) => async move {
                let answer = c.req_packed_commands(pipeline, offset, count).await;
                s.after(*generation, &answer, |vs| vs.iter().any(refused_value))
                    .await;
                answer
            }
            .boxed(),
            Conn::Cluster(c, _) => {
                if pipeline.is_transaction() {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    split_by_slot(c.clone(), pipeline).boxed()
                }
            }
            Conn::Primary(s) => {
                let pipeline = pipeline.clone();
                async move {
                    s.run(
                        move |mut c| {
                            let pipeline = pipeline.clone();
                            async move { c.req_packed_commands(&pipeline, offset, count).await }
                                .boxed()
                        },
                        |values| values.iter().any(refused_value),
                    )
                    .await
                }
                .boxed()
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(..) => 0,
            Conn::Primary(s) | Conn::Pinned(s, _, _) => s.inner.target.db,
        }
    }
}

/// The slot a command's key is in; `None` for a command without a key (PUBLISH, PING).
fn command_slot(cmd: &Cmd) -> Option<u16> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"FCALL" => {
            let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (numkeys > 0).then(|| args.get(3)).flatten()?
        }
        b"PUBLISH" | b"PING" | b"WAIT" | b"SCRIPT" | b"INFO" | b"CLUSTER" => return None,
        _ => args.get(1)?,
    };
    Some(slot_of(key))
}

/// Runs a non-atomic pipeline on a cluster as one pipeline per slot (in parallel), answers in
/// the pipeline's order. Commands of one slot keep their order.
async fn split_by_slot(conn: ClusterConnection, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    let mut groups: HashMap<Option<u16>, Vec<usize>> = HashMap::new();
    let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
    for (i, cmd) in cmds.iter().enumerate() {
        groups.entry(command_slot(cmd)).or_default().push(i);
    }
    if groups.len() <= 1 {
        let mut conn = conn;
        return conn.req_packed_commands(pipeline, 0, cmds.len()).await;
    }
    // Keyless commands (PUBLISH) after the writes they announce: a woken poll finds its command.
    let keyless = groups.remove(&None);
    let parts = groups.into_values().map(|indexes| {
        let mut part = redis::pipe();
        for &i in &indexes {
            part.add_command(cmds[i].clone());
        }
        let mut conn = conn.clone();
        async move {
            let values = conn.req_packed_commands(&part, 0, indexes.len()).await?;
            Ok::<_, RedisError>((indexes, values))
        }
    });
    let mut answers = vec![Value::Nil; cmds.len()];
    let mut place = |indexes: Vec<usize>, values: Vec<Value>| {
        for (i, v) in indexes.into_iter().zip(values) {
            answers[i] = v;
        }
    };
    for (indexes, values) in futures::future::try_join_all(parts).await? {
        place(indexes, values);
    }
    if let Some(indexes) = keyless {
        let mut part = redis::pipe();
        for &i in &indexes {
            part.add_command(cmds[i].clone());
        }
        let values = conn
            .clone()
            .req_packed_commands(&part, 0, indexes.len())
            .await?;
        place(indexes, values);
    }
    Ok(answers)
}

/// `WAIT` fell short: fewer replicas than `--redis-wait-replicas` confirmed a write in time.
/// The write may be lost in a failover, so it is not acknowledged (the caller retries).
pub fn not_replicated(wanted: usize) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
        NOT_REPLICATED,
        format!("fewer than {wanted} replica(s) confirmed the write in time"),
    ))
}

/// Whether `e` is [`not_replicated`].
pub fn is_not_replicated(e: &redis::RedisError) -> bool {
    e.to_string().contains(NOT_REPLICATED)
}

const NOT_REPLICATED: &str = "not replicated";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_put_in_their_keys_slots() {
        let lpush = redis::cmd("LPUSH")
            .arg("agent:{1:2}:queue")
            .arg("x")
            .clone();
        let hset = redis::cmd("HSET")
            .arg("agent:{1:2}")
            .arg("a")
            .arg("b")
            .clone();
        assert_eq!(command_slot(&lpush), command_slot(&hset));
        let zadd = redis::cmd("ZADD").arg("agents").arg(1).arg("1:2").clone();
        assert_ne!(command_slot(&zadd), command_slot(&lpush));
        let publish = redis::cmd("PUBLISH").arg("jsacc:events").arg("{}").clone();
        assert_eq!(command_slot(&publish), None);
    }

    #[test]
    fn a_script_is_in_the_slot_of_its_first_key() {
        let eval = redis::cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("job:7")
            .arg("other")
            .arg("arg")
            .clone();
        let hget = redis::cmd("HGET").arg("job:7").arg("state").clone();
        assert_eq!(command_slot(&eval), command_slot(&hget));
        let keyless = redis::cmd("EVALSHA").arg("abc").arg(0).arg("arg").clone();
        assert_eq!(command_slot(&keyless), None);
    }

    #[test]
    fn slots_are_computed_as_redis_computes_them() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"cmds_queue"), 1468);
        assert_eq!(slot_of(b"{cmds_queue}:routing:x"), 1468);
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
        // An empty tag is no tag; only the first `{` counts.
        assert_eq!(
            slot_of(b"foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16384
        );
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    #[test]
    fn the_owner_of_a_slot_is_read_from_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("127.0.0.1", 7002),
            ]),
            Value::Int(3),
        ]);
        let map = SlotMap::parse(answer);
        assert_eq!(map.owner(0), Some(("127.0.0.1".into(), 7001)));
        assert_eq!(map.owner(5461), Some(("127.0.0.1".into(), 7002)));
        assert_eq!(map.owner(16383), Some(("127.0.0.1".into(), 7002)));
        assert_eq!(SlotMap::parse(Value::Nil).owner(0), None);
    }

    #[test]
    fn cluster_nodes_are_read_from_cluster_nodes_output() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b2 127.0.0.1:7001@17001,host.example master - 0 0 2 connected 5461-10922\n\
                    c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected\n";
        assert_eq!(
            cluster_nodes(text),
            vec![("127.0.0.1".into(), 7000), ("127.0.0.1".into(), 7001)]
        );
    }

    #[tokio::test]
    async fn a_sentinel_without_a_password_is_asked_without_the_urls_credentials() {
        let server = crate::testkit::RedisServer::start();
        let target = Target::parse(&format!(
            "redis+sentinel://:secret@127.0.0.1:{}/jsacc",
            server.port
        ))
        .expect("target");
        let node = target.nodes[0].clone();
        let mut conn = None;
        for _ in 0..100 {
            match sentinel_connection(&target, &node, None).await {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(e) if e.is_connection_refusal() => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("the credentials were not dropped: {e}"),
            }
        }
        let mut conn = conn.expect("redis-server answers");
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("PING");
        assert_eq!(pong, "PONG");
    }

    #[test]
    fn refusals_that_mean_a_failover_are_recognised() {
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(not_run(&readonly));
        assert!(maybe_failover(&readonly));
        let wrongtype = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!not_run(&wrongtype));
    }
}
