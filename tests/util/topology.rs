//! Real Redis topologies for the end-to-end tests: a Redis Cluster of 3 primaries + 3 replicas
//! ([`RedisCluster`]) and a Sentinel set of 1 primary, 2 replicas and 3 sentinels
//! ([`SentinelSet`]), each process on a free loopback port in its own temporary directory,
//! killed on drop. [`RedisTarget`] is what `Controller`, `Agent` and `Cluster` need of any of
//! them (the standalone [`Redis`](crate::Redis) too). [`RedisCluster::start_tls`] and
//! [`SentinelSet::start_tls`] start the same deployments speaking only TLS (`rediss+cluster://`,
//! `rediss+sentinel://`), every process serving one self-signed certificate that is its own CA.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{bin_dir, free_port, wait_for, Proc, RedisClient};

/// How long a topology may take to form, or to fail over.
const FORM: Duration = Duration::from_secs(60);

/// What a stack needs of a Redis deployment: standalone, Sentinel or Cluster.
pub trait RedisTarget {
    /// Its URL in the forms of DESIGN §11 (`redis://…`, `redis+sentinel://…`, `redis+cluster://…`).
    fn url(&self) -> String;
    /// The flags that point `jsacc` (and `jsacc token`) at it: `-r <url>` (and TLS flags).
    fn jsacc_args(&self) -> Vec<String>;
    /// A test client of it, knowing only DESIGN §3–§4.
    fn client(&self) -> RedisClient;
    /// `standalone`, `sentinel` or `cluster`.
    fn topology(&self) -> &'static str;
    /// The pids of every process of the deployment (data nodes and sentinels).
    fn pids(&self) -> Vec<u32>;
    /// `jsacc token add --gid G --nid N <jsacc_args>`: the token from its last stdout line.
    fn token_add(&self, gid: u64, nid: u64) -> String {
        token_add_with(&self.jsacc_args(), gid, nid, &[])
    }
    /// `jsacc token add --gid G --nid N --roles a,b <jsacc_args>`.
    fn token_add_roles(&self, gid: u64, nid: u64, roles: &[&str]) -> String {
        token_add_with(&self.jsacc_args(), gid, nid, roles)
    }
}

/// `jsacc token add --gid G --nid N [--roles …] <redis_args>`: the token from its last stdout line.
pub fn token_add_with(redis_args: &[String], gid: u64, nid: u64, roles: &[&str]) -> String {
    let mut cmd = Command::new(bin_dir().join("jsacc"));
    cmd.args([
        "token",
        "add",
        "--gid",
        &gid.to_string(),
        "--nid",
        &nid.to_string(),
    ]);
    if !roles.is_empty() {
        cmd.arg("--roles").arg(roles.join(","));
    }
    let out = cmd.args(redis_args).output().expect("jsacc token add runs");
    assert!(
        out.status.success(),
        "token add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("a token line")
        .trim()
        .to_owned()
}

impl RedisTarget for crate::Redis {
    fn url(&self) -> String {
        crate::Redis::url(self)
    }
    fn jsacc_args(&self) -> Vec<String> {
        crate::Redis::jsacc_args(self)
    }
    fn client(&self) -> RedisClient {
        crate::Redis::client(self)
    }
    fn topology(&self) -> &'static str {
        "standalone"
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.pid()]
    }
    fn token_add(&self, gid: u64, nid: u64) -> String {
        crate::Redis::token_add(self, gid, nid)
    }
}

/// The TLS material of a TLS topology: one self-signed certificate for 127.0.0.1 and localhost
/// (its own CA, as [`Redis::start_tls`](crate::Redis::start_tls) makes), served by every process.
struct Tls {
    _dir: tempfile::TempDir,
    /// The certificate, which is also the CA every client and server trusts.
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn new() -> Tls {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
        let (cert, key) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        Tls {
            _dir: dir,
            cert,
            key,
        }
    }

    /// The TLS settings of every process as `name value` pairs (config file lines or flags):
    /// certificate, key, CA, and no client certificates asked for.
    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tls-cert-file", self.cert.display().to_string()),
            ("tls-key-file", self.key.display().to_string()),
            ("tls-ca-cert-file", self.cert.display().to_string()),
            ("tls-auth-clients", "no".to_owned()),
        ]
    }

    /// [`Tls::settings`] as config file lines.
    fn conf(&self) -> String {
        self.settings()
            .iter()
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect()
    }
}

/// A redis-rs client of `url` (`rediss://…`) that trusts `ca` (a PEM file).
fn tls_client(url: &str, ca: &Path) -> redis::RedisResult<redis::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root_cert = Some(std::fs::read(ca)?);
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert,
        },
    )
}

/// A connection to one server (over TLS, trusting `ca`, when given), with short connect and read
/// timeouts (for admin commands).
fn admin(port: u16, ca: Option<&Path>) -> redis::RedisResult<redis::Connection> {
    let client = match ca {
        None => redis::Client::open(format!("redis://127.0.0.1:{port}"))?,
        Some(ca) => tls_client(&format!("rediss://127.0.0.1:{port}"), ca)?,
    };
    let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

/// `INFO <section>` of the server on `port` as field → value.
fn info(port: u16, ca: Option<&Path>, section: &str) -> Option<HashMap<String, String>> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut admin(port, ca).ok()?)
        .ok()?;
    Some(info_fields(&text))
}

/// The text of an `INFO` reply as field → value.
pub fn info_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The first element of `ROLE` (`master`, `slave`, `sentinel`) of the server on `port`.
fn role(port: u16, ca: Option<&Path>) -> Option<String> {
    let reply: redis::Value = redis::cmd("ROLE").query(&mut admin(port, ca).ok()?).ok()?;
    match reply {
        redis::Value::Array(items) => redis::from_redis_value(items.into_iter().next()?).ok(),
        _ => None,
    }
}

/// One data node of a topology: its port, directory and process (None while killed).
struct Node {
    port: u16,
    /// The CA to trust when it speaks only TLS.
    ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    /// The arguments it is started with (after the program name).
    args: Vec<String>,
    proc: Option<Proc>,
    starts: usize,
}

impl Node {
    /// A node on `port` (plain text; TLS only, trusting `ca`, when given).
    fn new(
        port: u16,
        ca: Option<PathBuf>,
        args: impl FnOnce(u16, &std::path::Path) -> Vec<String>,
    ) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = args(port, dir.path());
        Node {
            port,
            ca,
            dir,
            args,
            proc: None,
            starts: 0,
        }
    }

    fn spawn(&mut self) {
        assert!(self.proc.is_none(), "node :{} is running", self.port);
        self.starts += 1;
        let mut cmd = Command::new("redis-server");
        cmd.args(&self.args).current_dir(self.dir.path());
        let log = self.dir.path().join(format!("redis.{}.log", self.starts));
        self.proc = Some(Proc::spawn(cmd, log));
    }

    fn wait_up(&self) {
        wait_for(
            &format!("redis-server :{} up", self.port),
            Duration::from_secs(20),
            || {
                let pong: String = redis::cmd("PING")
                    .query(&mut admin(self.port, self.ca.as_deref()).ok()?)
                    .ok()?;
                (pong == "PONG").then_some(())
            },
        );
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    fn running(&self) -> bool {
        self.proc.is_some()
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for i in 1..=self.starts {
            let p = self.dir.path().join(format!("redis.{i}.log"));
            all.push_str(&format!(
                "--- :{} start {i} ---\n{}\n",
                self.port,
                std::fs::read_to_string(p).unwrap_or_default()
            ));
        }
        all
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub flags: Vec<String>,
    /// The primary's id, for a replica.
    pub master: Option<String>,
    /// Slot ranges served (inclusive).
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    pub fn is_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }
    pub fn failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// `CLUSTER NODES` as the node on `port` sees the cluster.
fn cluster_nodes(port: u16, ca: Option<&Path>) -> Option<Vec<ClusterNode>> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut admin(port, ca).ok()?)
        .ok()?;
    let mut nodes = vec![];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        let addr = f[1].split(['@', ',']).next()?;
        let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|x| (x, x)),
            })
            .collect();
        nodes.push(ClusterNode {
            id: f[0].to_owned(),
            port,
            flags: f[2].split(',').map(str::to_owned).collect(),
            master: (f[3] != "-").then(|| f[3].to_owned()),
            slots,
        });
    }
    Some(nodes)
}

/// `CLUSTER KEYSLOT key`, asked of the node on `port`.
fn keyslot(port: u16, ca: Option<&Path>, key: &str) -> Option<u16> {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut admin(port, ca).ok()?)
        .ok()
}

/// A free port for a cluster node: its bus port (port + 10000) is a port too, and free now.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 65535 - 10000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            return port;
        }
    }
}

/// A Redis Cluster: 6 redis-server processes, 3 primaries with one replica each, as
/// `redis-cli --cluster create … --cluster-replicas 1` arranged them.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Slot ranges a primary served when it was killed, by node index.
    killed_slots: HashMap<usize, Vec<(u16, u16)>>,
    /// The certificate every node serves, when the cluster speaks only TLS.
    tls: Option<Tls>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::spawn(None)
    }

    /// The same cluster speaking only TLS, on clients and the cluster bus alike (`--port 0
    /// --tls-port P --tls-cluster yes --tls-replication yes`), every node serving one
    /// self-signed certificate (its own CA, [`RedisCluster::ca`]).
    pub fn start_tls() -> RedisCluster {
        RedisCluster::spawn(Some(Tls::new()))
    }

    fn spawn(tls: Option<Tls>) -> RedisCluster {
        let ca = tls.as_ref().map(|t| t.cert.clone());
        let mut nodes: Vec<Node> = (0..6)
            .map(|_| {
                Node::new(cluster_port(), ca.clone(), |port, dir| {
                    let mut args: Vec<String> = [
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &dir.join("nodes.conf").display().to_string(),
                        "--cluster-node-timeout",
                        "2000",
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "everysec",
                        "--save",
                        "",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    match &tls {
                        None => args.extend(["--port".into(), port.to_string()]),
                        Some(tls) => {
                            args.extend(
                                [
                                    "--port",
                                    "0",
                                    "--tls-port",
                                    &port.to_string(),
                                    "--tls-cluster",
                                    "yes",
                                    "--tls-replication",
                                    "yes",
                                ]
                                .map(str::to_owned),
                            );
                            for (k, v) in tls.settings() {
                                args.extend([format!("--{k}"), v]);
                            }
                        }
                    }
                    args.extend(["--dir".into(), dir.display().to_string()]);
                    args
                })
            })
            .collect();
        for n in &mut nodes {
            n.spawn();
        }
        for n in &nodes {
            n.wait_up();
        }
        let mut create = Command::new("redis-cli");
        if let Some(ca) = &ca {
            create.arg("--tls").arg("--cacert").arg(ca);
        }
        create.args(["--cluster", "create"]);
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster {
            nodes,
            killed_slots: HashMap::new(),
            tls,
        };
        cluster.wait_healthy();
        cluster
    }

    /// The CA to trust (the certificate every node serves), when the cluster speaks only TLS.
    pub fn ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert.as_path())
    }

    /// A redis-rs cluster client of the seed nodes (trusting [`RedisCluster::ca`] when the
    /// cluster speaks TLS).
    pub fn cluster_client(&self) -> redis::cluster::ClusterClient {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let mut builder = redis::cluster::ClusterClient::builder(
            self.ports()
                .into_iter()
                .map(|p| format!("{scheme}://127.0.0.1:{p}")),
        )
        .connection_timeout(Duration::from_secs(2))
        .retries(20);
        if let Some(ca) = self.ca() {
            let _ = rustls::crypto::ring::default_provider().install_default();
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca).expect("CA")),
            });
        }
        builder.build().expect("cluster client")
    }

    /// Waits until every running node sees all 6 nodes, none failed, says `cluster_state:ok`,
    /// 3 primaries serve all 16384 slots, and every replica's link to its primary is up.
    pub fn wait_healthy(&self) {
        let what = "a healthy Redis Cluster (6 nodes, state ok, replicas in sync)";
        let start = Instant::now();
        while self.healthy().is_err() {
            if start.elapsed() > FORM {
                panic!(
                    "timed out after {FORM:?} waiting for {what}: {}\n{}",
                    self.healthy().err().unwrap_or_default(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn healthy(&self) -> Result<(), String> {
        for n in &self.nodes {
            if !n.running() {
                return Err(format!(":{} is not running", n.port));
            }
            let state = info(n.port, self.ca(), "cluster")
                .ok_or(format!(":{} does not answer INFO", n.port))?;
            let cinfo: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut admin(n.port, self.ca()).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            if !cinfo.contains("cluster_state:ok")
                || state.get("cluster_enabled").map(String::as_str) != Some("1")
            {
                return Err(format!(":{} cluster_state not ok", n.port));
            }
            let view = cluster_nodes(n.port, self.ca()).ok_or("CLUSTER NODES")?;
            if view.len() != 6
                || view.iter().any(|v| {
                    v.failed() || v.flags.iter().any(|f| f == "handshake" || f == "noaddr")
                })
            {
                return Err(format!(":{} sees {view:?}", n.port));
            }
            let primaries: Vec<&ClusterNode> = view.iter().filter(|v| v.is_primary()).collect();
            let covered: u32 = primaries
                .iter()
                .flat_map(|p| p.slots.iter())
                .map(|&(a, b)| u32::from(b - a) + 1)
                .sum();
            if primaries.len() != 3 || covered != 16384 {
                return Err(format!(
                    ":{} sees {} primaries, {covered} slots",
                    n.port,
                    primaries.len()
                ));
            }
            if role(n.port, self.ca()).as_deref() == Some("slave") {
                let repl = info(n.port, self.ca(), "replication").ok_or("INFO replication")?;
                if repl.get("master_link_status").map(String::as_str) != Some("up") {
                    return Err(format!(":{} replica link not up", n.port));
                }
            }
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}+cluster://{}", hosts.join(","))
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Index of the node listening on `port`.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// `CLUSTER NODES` as a running node sees it (the first that answers).
    pub fn view(&self) -> Vec<ClusterNode> {
        wait_for("a node answering CLUSTER NODES", FORM, || {
            self.nodes
                .iter()
                .filter(|n| n.running())
                .find_map(|n| cluster_nodes(n.port, self.ca()))
        })
    }

    /// Indexes of the nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        self.view()
            .iter()
            .filter(|v| v.is_primary() && !v.failed() && !v.slots.is_empty())
            .filter_map(|v| self.index_of_port(v.port))
            .collect()
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        wait_for("CLUSTER KEYSLOT", FORM, || {
            self.nodes
                .iter()
                .filter(|n| n.running())
                .find_map(|n| keyslot(n.port, self.ca(), key))
        })
    }

    /// Index of the primary serving `key` now.
    pub fn primary_of(&self, key: &str) -> usize {
        let slot = self.slot(key);
        let view = self.view();
        let owner = view
            .iter()
            .find(|v| v.is_primary() && !v.failed() && v.serves(slot))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}: {view:?}"));
        self.index_of_port(owner.port).expect("a node of ours")
    }

    /// SIGKILL of node `index` (it keeps its port and directory for [`RedisCluster::restart`]).
    pub fn kill9(&mut self, index: usize) {
        let port = self.nodes[index].port;
        if let Some(me) = self.view().into_iter().find(|v| v.port == port) {
            if me.is_primary() && !me.slots.is_empty() {
                self.killed_slots.insert(index, me.slots);
            }
        }
        self.nodes[index].kill9();
    }

    /// Starts node `index` again (same port, same directory and `nodes.conf`): it rejoins.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].spawn();
        self.nodes[index].wait_up();
    }

    /// After [`RedisCluster::kill9`] of primary `old`: waits until every running node says
    /// `cluster_state:ok` and agrees that another primary, answering `ROLE` master, serves the
    /// slots `old` served. Returns that primary's index.
    pub fn wait_failover(&self, old: usize) -> usize {
        let slots = self
            .killed_slots
            .get(&old)
            .unwrap_or_else(|| panic!("node {old} was not a primary when it was killed"))
            .clone();
        let (first, _) = slots[0];
        let start = Instant::now();
        loop {
            let mut owners = vec![];
            let mut ok = true;
            for n in self.nodes.iter().filter(|n| n.running()) {
                let cinfo: Option<String> = admin(n.port, self.ca())
                    .ok()
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c).ok());
                let state_ok = cinfo.is_some_and(|i| i.contains("cluster_state:ok"));
                let owner = cluster_nodes(n.port, self.ca()).and_then(|view| {
                    view.into_iter().find(|v| {
                        v.is_primary()
                            && !v.failed()
                            && slots.iter().all(|&(a, b)| v.serves(a) && v.serves(b))
                    })
                });
                match owner {
                    Some(o) if state_ok && o.port != self.nodes[old].port => owners.push(o.port),
                    _ => ok = false,
                }
            }
            if ok
                && !owners.is_empty()
                && owners.iter().all(|&p| p == owners[0])
                && role(owners[0], self.ca()).as_deref() == Some("master")
            {
                return self.index_of_port(owners[0]).expect("a node of ours");
            }
            if start.elapsed() > FORM {
                panic!(
                    "timed out after {FORM:?} waiting for a failover of node {old} (slot {first}); owners seen: {owners:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.proc.as_ref().map(Proc::pid))
            .collect()
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(Node::logs).collect()
    }

    /// The directory of node `index` (its `nodes.conf`, append-only files and logs).
    pub fn dir(&self, index: usize) -> PathBuf {
        self.nodes[index].dir.path().to_path_buf()
    }
}

/// `-r <url>`, and `--redis-ca <ca>` when the deployment speaks TLS.
fn redis_args(url: String, ca: Option<&Path>) -> Vec<String> {
    let mut args = vec!["-r".to_owned(), url];
    if let Some(ca) = ca {
        args.extend(["--redis-ca".to_owned(), ca.display().to_string()]);
    }
    args
}

impl RedisTarget for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
    fn jsacc_args(&self) -> Vec<String> {
        redis_args(self.url(), self.ca())
    }
    /// Panics on a TLS cluster: [`RedisClient`] makes its cluster client of `redis://` seeds
    /// only; use [`RedisCluster::cluster_client`] there.
    fn client(&self) -> RedisClient {
        assert!(
            self.tls.is_none(),
            "RedisClient has no TLS cluster backend (tests/util/client.rs); use RedisCluster::cluster_client()"
        );
        RedisClient::new(&self.url())
    }
    fn topology(&self) -> &'static str {
        "cluster"
    }
    fn pids(&self) -> Vec<u32> {
        RedisCluster::pids(self)
    }
}

/// The name the sentinels monitor the primary under.
pub const SENTINEL_MASTER: &str = "jsacc";

/// A Sentinel deployment: data nodes 0 (the first primary), 1 and 2 (its replicas), and three
/// sentinels monitoring them as `jsacc` with quorum 2.
pub struct SentinelSet {
    nodes: Vec<Node>,
    sentinels: Vec<Node>,
    /// The certificate every process serves, when the set speaks only TLS.
    tls: Option<Tls>,
}

/// The `port` lines of a config file: `port P`, or `port 0` + `tls-port P` + `tls-replication
/// yes` and the TLS settings (replication, and a sentinel's links to the data nodes and the
/// other sentinels, over TLS).
fn port_conf(port: u16, tls: Option<&Tls>) -> String {
    match tls {
        None => format!("port {port}\n"),
        Some(tls) => format!(
            "port 0\ntls-port {port}\ntls-replication yes\n{}",
            tls.conf()
        ),
    }
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        SentinelSet::spawn(None)
    }

    /// The same set speaking only TLS: data nodes and sentinels on a TLS port only, replication
    /// and the sentinels' links over TLS, every process serving one self-signed certificate
    /// (its own CA, [`SentinelSet::ca`]).
    pub fn start_tls() -> SentinelSet {
        SentinelSet::spawn(Some(Tls::new()))
    }

    fn spawn(tls: Option<Tls>) -> SentinelSet {
        let ca = tls.as_ref().map(|t| t.cert.clone());
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..3 {
            let primary = nodes.first().map(|n: &Node| n.port);
            let node = Node::new(free_port(), ca.clone(), |port, dir| {
                // A config file of its own, so the CONFIG REWRITE the sentinels send on a
                // reconfiguration works. Every node gets the primary's settings: the one promoted
                // also refuses writes without a replica.
                let mut conf = format!(
                    "bind 127.0.0.1\n{}dir {}\nappendonly yes\nappendfsync everysec\nsave \"\"\n\
                     min-replicas-to-write 1\nmin-replicas-max-lag 10\n",
                    port_conf(port, tls.as_ref()),
                    dir.display()
                );
                if let (Some(p), true) = (primary, i > 0) {
                    conf.push_str(&format!("replicaof 127.0.0.1 {p}\n"));
                }
                let file = dir.join("redis.conf");
                std::fs::write(&file, conf).expect("redis.conf");
                vec![file.display().to_string()]
            });
            nodes.push(node);
        }
        for n in &mut nodes {
            n.spawn();
        }
        for n in &nodes {
            n.wait_up();
        }
        let primary = nodes[0].port;
        let mut sentinels: Vec<Node> = (0..3)
            .map(|_| {
                Node::new(free_port(), ca.clone(), |port, dir| {
                    let conf = format!(
                        "bind 127.0.0.1\n{}dir {}\nsentinel resolve-hostnames no\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 2\n",
                        port_conf(port, tls.as_ref()),
                        dir.display()
                    );
                    let file = dir.join("sentinel.conf");
                    std::fs::write(&file, conf).expect("sentinel.conf");
                    vec![file.display().to_string(), "--sentinel".to_owned()]
                })
            })
            .collect();
        for s in &mut sentinels {
            s.spawn();
        }
        for s in &sentinels {
            s.wait_up();
        }
        let set = SentinelSet {
            nodes,
            sentinels,
            tls,
        };
        set.wait_healthy();
        set
    }

    /// The CA to trust (the certificate every process serves), when the set speaks only TLS.
    pub fn ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert.as_path())
    }

    /// Waits until every sentinel knows the primary, both replicas (not down) and the two
    /// other sentinels, and every replica's link is up.
    pub fn wait_healthy(&self) {
        let start = Instant::now();
        while let Err(why) = self.healthy() {
            if start.elapsed() > FORM {
                panic!(
                    "timed out after {FORM:?} waiting for a healthy Sentinel set: {why}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn healthy(&self) -> Result<(), String> {
        let primary = self
            .primary_port_agreed()
            .ok_or("the sentinels do not agree on a primary")?;
        if role(primary, self.ca()).as_deref() != Some("master") {
            return Err(format!(":{primary} is not a master"));
        }
        for s in &self.sentinels {
            let mut conn = admin(s.port, self.ca()).map_err(|e| e.to_string())?;
            let replicas: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(SENTINEL_MASTER)
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            let live = replicas
                .iter()
                .filter(|r| {
                    let flags = r.get("flags").map(String::as_str).unwrap_or("");
                    !flags.contains("down")
                        && !flags.contains("disconnected")
                        && r.get("master-link-status").map(String::as_str) == Some("ok")
                        && r.get("master-port").and_then(|p| p.parse::<u16>().ok()) == Some(primary)
                })
                .count();
            let expected = self.nodes.iter().filter(|n| n.running()).count() - 1;
            if live < expected {
                return Err(format!("sentinel :{} knows {live} live replicas", s.port));
            }
            let others: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg("SENTINELS")
                .arg(SENTINEL_MASTER)
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            let expected = self.sentinels.iter().filter(|s| s.running()).count() - 1;
            if others.len() < expected {
                return Err(format!(
                    "sentinel :{} knows {} sentinels",
                    s.port,
                    others.len()
                ));
            }
        }
        for n in self
            .nodes
            .iter()
            .filter(|n| n.running() && n.port != primary)
        {
            let repl = info(n.port, self.ca(), "replication").ok_or("INFO replication")?;
            if repl.get("master_link_status").map(String::as_str) != Some("up") {
                return Err(format!(":{} replica link not up", n.port));
            }
        }
        Ok(())
    }

    /// The primary's port as each running sentinel says; `Some` when they all agree.
    fn primary_port_agreed(&self) -> Option<u16> {
        let ports: Vec<Option<u16>> = self
            .sentinels
            .iter()
            .filter(|s| s.running())
            .map(|s| sentinel_primary(s.port, self.ca()))
            .collect();
        let first = *ports.first()?;
        ports.iter().all(|p| *p == first).then_some(first).flatten()
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// `host:port` of each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Index (0..3) of the data node the sentinels name as primary now.
    pub fn primary(&self) -> usize {
        wait_for("a sentinel naming the primary", FORM, || {
            let port = self
                .sentinels
                .iter()
                .filter(|s| s.running())
                .find_map(|s| sentinel_primary(s.port, self.ca()))?;
            self.nodes.iter().position(|n| n.port == port)
        })
    }

    /// SIGKILL of the current primary; returns its index.
    pub fn kill9_primary(&mut self) -> usize {
        let old = self.primary();
        self.kill9(old);
        old
    }

    /// SIGKILL of data node `index`.
    pub fn kill9(&mut self, index: usize) {
        self.nodes[index].kill9();
    }

    /// Waits until every sentinel names another primary than `old`, that node answers `ROLE`
    /// master and has a replica connected (so it takes writes); returns its index.
    pub fn wait_failover(&self, old: usize) -> usize {
        let old_port = self.nodes[old].port;
        let start = Instant::now();
        loop {
            if let Some(port) = self.primary_port_agreed().filter(|&p| p != old_port) {
                let replicas = info(port, self.ca(), "replication")
                    .and_then(|r| r.get("connected_slaves")?.parse::<u32>().ok())
                    .unwrap_or(0);
                if role(port, self.ca()).as_deref() == Some("master") && replicas >= 1 {
                    return self
                        .nodes
                        .iter()
                        .position(|n| n.port == port)
                        .expect("ours");
                }
            }
            if start.elapsed() > FORM {
                panic!(
                    "timed out after {FORM:?} waiting for a failover away from :{old_port}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts data node `index` again (same port and directory) as a replica of the current
    /// primary; the sentinels take it back as a replica.
    pub fn restart(&mut self, index: usize) {
        let primary = self.nodes[self.primary()].port;
        let conf = self.nodes[index].dir.path().join("redis.conf");
        let text = std::fs::read_to_string(&conf).expect("redis.conf");
        let mut kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("replicaof") && !l.starts_with("slaveof"))
            .collect();
        let replicaof = format!("replicaof 127.0.0.1 {primary}");
        kept.push(&replicaof);
        std::fs::write(&conf, kept.join("\n") + "\n").expect("redis.conf");
        self.nodes[index].spawn();
        self.nodes[index].wait_up();
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .chain(&self.sentinels)
            .filter_map(|n| n.proc.as_ref().map(Proc::pid))
            .collect()
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .chain(&self.sentinels)
            .map(Node::logs)
            .collect()
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME jsacc` of the sentinel on `port`: the primary's port.
fn sentinel_primary(port: u16, ca: Option<&Path>) -> Option<u16> {
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(SENTINEL_MASTER)
        .query(&mut admin(port, ca).ok()?)
        .ok()?;
    addr?.1.parse().ok()
}

impl RedisTarget for SentinelSet {
    fn url(&self) -> String {
        SentinelSet::url(self)
    }
    fn jsacc_args(&self) -> Vec<String> {
        redis_args(self.url(), self.ca())
    }
    /// On a TLS set: a client of the primary the sentinels name now, over TLS ([`RedisClient`]
    /// asks sentinels in plain text only), which does not follow a failover.
    fn client(&self) -> RedisClient {
        match self.ca() {
            None => RedisClient::new(&self.url()),
            Some(ca) => {
                let port = self.nodes[self.primary()].port;
                RedisClient::from(
                    tls_client(&format!("rediss://127.0.0.1:{port}"), ca).expect("TLS client"),
                )
            }
        }
    }
    fn topology(&self) -> &'static str {
        "sentinel"
    }
    fn pids(&self) -> Vec<u32> {
        SentinelSet::pids(self)
    }
}

/// A topology that can lose the primary holding `cmds_queue` and fail over.
pub trait Failover: RedisTarget {
    /// SIGKILL of the primary that holds `cmds_queue` now; returns its index.
    fn kill9_queue_primary(&mut self) -> usize;
    /// Waits until another node took over from primary `old`; returns its index.
    fn wait_failover(&self, old: usize) -> usize;
    /// Starts data node `index` again (same port and directory); it rejoins as a replica.
    fn restart(&mut self, index: usize);
    /// Waits until every node is up and in sync again.
    fn wait_healthy(&self);
    /// Every process's log, for failure messages.
    fn logs(&self) -> String;
}

impl Failover for RedisCluster {
    fn kill9_queue_primary(&mut self) -> usize {
        let old = self.primary_of("cmds_queue");
        self.kill9(old);
        old
    }
    fn wait_failover(&self, old: usize) -> usize {
        RedisCluster::wait_failover(self, old)
    }
    fn restart(&mut self, index: usize) {
        RedisCluster::restart(self, index)
    }
    fn wait_healthy(&self) {
        RedisCluster::wait_healthy(self)
    }
    fn logs(&self) -> String {
        RedisCluster::logs(self)
    }
}

impl Failover for SentinelSet {
    fn kill9_queue_primary(&mut self) -> usize {
        self.kill9_primary()
    }
    fn wait_failover(&self, old: usize) -> usize {
        SentinelSet::wait_failover(self, old)
    }
    fn restart(&mut self, index: usize) {
        SentinelSet::restart(self, index)
    }
    fn wait_healthy(&self) {
        SentinelSet::wait_healthy(self)
    }
    fn logs(&self) -> String {
        SentinelSet::logs(self)
    }
}
