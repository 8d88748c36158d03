//! Helpers of the end-to-end tests and benchmarks: real `redis-server`, `jsacc` and `jsagent`
//! processes on free loopback ports, each in its own temporary directory, killed on drop.
//!
//! - [`Redis`]: a private redis-server.
//! - [`Controller`]: a `jsacc` process (TLS by default), which can be SIGKILLed and restarted.
//! - [`Agent`]: a `jsagent` process with its token, likewise.
//! - [`Cluster`]: the three together, plus a Redis client that speaks only DESIGN §3–§4.
//! - [`RedisCluster`], [`SentinelSet`] (module [`topology`]): real Redis Cluster and Sentinel
//!   deployments; anything [`RedisTarget`] runs a controller, agents or a whole [`Cluster`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod client;
pub mod raw_http;
pub mod topology;
pub use client::{Conn, RedisClient};
pub use topology::{Failover, RedisCluster, RedisTarget, SentinelSet};

/// Directory holding the `jsacc` and `jsagent` binaries, built once per test run; or
/// `JSACC_BIN_DIR` (relative to the workspace root) when set.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent")
            .to_path_buf();
        if let Ok(dir) = std::env::var("JSACC_BIN_DIR") {
            // A relative path is taken from the workspace root (tests run in tests/).
            return root.join(dir);
        }
        let status = Command::new(env!("CARGO"))
            // The same build as `cargo build --bins` at the root (scripts/test-all.sh): a build
            // of only the two packages unifies features differently and rebuilds half the deps.
            .args(["build", "--bins", "--workspace"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build of jsacc and jsagent failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        target.join("debug")
    })
    .clone()
}

/// Directory of the `jsacc` and `jsagent` a benchmark runs: `BENCH_BIN_DIR` when set (an A/B
/// run, a profiler's wrapper), else release builds, built first.
pub fn bench_bin_dir() -> PathBuf {
    match std::env::var_os("BENCH_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => release_bin_dir(),
    }
}

/// Directory holding release builds of `jsacc` and `jsagent`, for benchmarks.
pub fn release_bin_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--bins",
            "-p",
            "controller",
            "-p",
            "node-agent",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo build --release of jsacc and jsagent failed"
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("release")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Whether process `pid` is gone, or a zombie waiting for its parent (maybe init) to reap it.
pub fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "pid (comm) state ..."; comm may hold spaces and parentheses.
    stat.is_empty()
        || stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("Z")
}

/// Live processes whose command line mentions `marker` (Wine shows a Windows process's own
/// command line there too).
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(marker) && !gone(pid)
        })
        .collect()
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks: u64 = f.iter().sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed when dropped, with its output in files.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; waits up to `limit` for the exit and returns how long it took.
    pub fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let start = Instant::now();
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A private redis-server on a free port; with [`Redis::start_tls`], TLS only, with its own CA.
pub struct Redis {
    pub port: u16,
    /// The certificate the TLS server serves (its own CA), when it speaks TLS.
    pub ca: Option<PathBuf>,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::spawn(false)
    }

    /// A redis-server that speaks only TLS, with a self-signed certificate for 127.0.0.1.
    pub fn start_tls() -> Redis {
        Redis::spawn(true)
    }

    fn spawn(tls: bool) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        let ca = tls.then(|| {
            let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
            let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
            let (cert, key) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
            std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
            std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert);
            cert
        });
        if !tls {
            cmd.args(["--port", &port.to_string()]);
        }
        let proc = Proc::spawn(cmd, dir.path().join("redis.log"));
        let redis = Redis {
            port,
            ca,
            _proc: proc,
            _dir: dir,
        };
        wait_for("redis-server", Duration::from_secs(10), || {
            let mut conn = redis.client().blocking_checked()?;
            redis::cmd("PING").query::<String>(&mut conn).ok()
        });
        redis
    }

    /// The flags that point `jsacc` (and `jsacc token`) at this server.
    pub fn jsacc_args(&self) -> Vec<String> {
        let mut args = vec!["-r".to_owned(), self.url()];
        if let Some(ca) = &self.ca {
            args.extend(["--redis-ca".to_owned(), ca.display().to_string()]);
        }
        args
    }

    /// A client of this server (trusting its CA when it speaks TLS).
    pub fn client(&self) -> RedisClient {
        match &self.ca {
            None => RedisClient::new(&self.url()),
            Some(ca) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let root_cert = Some(std::fs::read(ca).expect("CA"));
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                };
                RedisClient::from(
                    redis::Client::build_with_tls(self.url(), certs).expect("TLS client"),
                )
            }
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self._proc.pid()
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `jsacc token add`: returns the token from its last line.
    pub fn token_add(&self, gid: u64, nid: u64) -> String {
        topology::token_add_with(&self.jsacc_args(), gid, nid, &[])
    }
}

/// How to start a controller.
#[derive(Clone, Default)]
pub struct ControllerOpts {
    pub insecure_http: bool,
    pub extra: Vec<String>,
}

/// A `jsacc` process; keeps its port and data dir (certificate) across restarts.
pub struct Controller {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// `-r …` (and `--redis-ca …`) of its Redis.
    redis: Vec<String>,
    opts: ControllerOpts,
    proc: Option<Proc>,
    starts: usize,
}

impl Controller {
    pub fn start(redis: &(impl RedisTarget + ?Sized), opts: ControllerOpts) -> Controller {
        let mut c = Controller {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            redis: redis.jsacc_args(),
            opts,
            proc: None,
            starts: 0,
        };
        c.restart();
        c
    }

    /// Starts the process (again) and waits until `/readyz` answers.
    pub fn restart(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(bin_dir().join("jsacc"));
        cmd.args(["--bind", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.redis)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.opts.extra)
            .env(
                "JSACC_LOG",
                std::env::var("JSACC_LOG").unwrap_or_else(|_| "info,controller=debug".into()),
            );
        if self.opts.insecure_http {
            cmd.arg("--insecure-http");
        }
        let log = self.dir.path().join(format!("jsacc.{}.log", self.starts));
        self.proc = Some(Proc::spawn(cmd, log));
        let url = format!("{}/readyz", self.url());
        let mut http = None;
        wait_for("jsacc /readyz", Duration::from_secs(20), || {
            let proc = self.proc.as_mut().expect("just started");
            if let Some(status) = proc.exited() {
                panic!("jsacc exited with {status}:\n{}", proc.output());
            }
            // The certificate exists once jsacc is past its start-up.
            if http.is_none() && (self.opts.insecure_http || self.cert().exists()) {
                http = Some(self.http());
            }
            http.as_ref()?
                .get(&url)
                .send()
                .ok()?
                .status()
                .is_success()
                .then_some(())
        });
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("controller running")
    }

    pub fn url(&self) -> String {
        let scheme = if self.opts.insecure_http {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls").join("cert.pem")
    }

    /// Everything every start of this controller logged (`jsacc.N.log` in its directory).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for i in 1..=self.starts {
            let p = self.dir.path().join(format!("jsacc.{i}.log"));
            all.push_str(&format!(
                "--- jsacc start {i} ---\n{}\n",
                std::fs::read_to_string(p).unwrap_or_default()
            ));
        }
        all
    }

    /// A blocking HTTP client that trusts this controller's certificate.
    pub fn http(&self) -> reqwest::blocking::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(90));
        if !self.opts.insecure_http {
            let pem = std::fs::read(self.cert()).expect("certificate written at start");
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"));
        }
        b.build().expect("http client")
    }
}

/// A `jsagent` process; keeps its data dir across restarts.
pub struct Agent {
    pub gid: u64,
    pub nid: u64,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    /// What runs the agent: `jsagent`, or e.g. `wine jsagent.exe`.
    program: Vec<String>,
    proc: Option<Proc>,
    starts: usize,
}

impl Agent {
    /// Like [`Agent::start`] (no roles), with the agent run by `program`, e.g.
    /// `["wine", "jsagent.exe"]`.
    pub fn start_program(
        redis: &(impl RedisTarget + ?Sized),
        controller: &Controller,
        gid: u64,
        nid: u64,
        program: Vec<String>,
    ) -> Agent {
        let mut a = Agent::configure(redis, controller, gid, nid, &[], "");
        a.program = program;
        a.restart();
        a
    }

    /// Adds a token for gid:nid and starts an agent against `controller`.
    pub fn start(
        redis: &(impl RedisTarget + ?Sized),
        controller: &Controller,
        gid: u64,
        nid: u64,
        roles: &[&str],
    ) -> Agent {
        Agent::start_configured(redis, controller, gid, nid, roles, "")
    }

    /// Like [`Agent::start`], with `config` (TOML) as its `--config` file when not empty.
    pub fn start_configured(
        redis: &(impl RedisTarget + ?Sized),
        controller: &Controller,
        gid: u64,
        nid: u64,
        roles: &[&str],
        config: &str,
    ) -> Agent {
        let mut a = Agent::configure(redis, controller, gid, nid, roles, config);
        a.restart();
        a
    }

    /// An agent set up (token, data dir, flags) but not started: for runners of its own, such as
    /// the Windows service manager. [`Agent::args`] are its flags.
    pub fn prepare(
        redis: &(impl RedisTarget + ?Sized),
        controller: &Controller,
        gid: u64,
        nid: u64,
    ) -> Agent {
        Agent::configure(redis, controller, gid, nid, &[], "")
    }

    /// The agent's command-line flags (controller, ids, token file, data dir, …).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    fn configure(
        redis: &(impl RedisTarget + ?Sized),
        controller: &Controller,
        gid: u64,
        nid: u64,
        roles: &[&str],
        config: &str,
    ) -> Agent {
        // An agent's roles are its token's (the --roles below only claim them).
        let token = redis.token_add_roles(gid, nid, roles);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), &token).expect("token file");
        let mut args = vec![
            "--controller".to_owned(),
            controller.url(),
            "--gid".into(),
            gid.to_string(),
            "--nid".into(),
            nid.to_string(),
            "--token-file".into(),
            dir.path().join("token").display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
        ];
        if !controller.opts.insecure_http {
            args.extend(["--ca-cert".into(), controller.cert().display().to_string()]);
        }
        if !roles.is_empty() {
            args.extend(["--roles".into(), roles.join(",")]);
        }
        if !config.is_empty() {
            let file = dir.path().join("agent.toml");
            std::fs::write(&file, config).expect("config file");
            args.extend(["--config".into(), file.display().to_string()]);
        }
        Agent {
            gid,
            nid,
            dir,
            args,
            program: vec![bin_dir().join("jsagent").display().to_string()],
            proc: None,
            starts: 0,
        }
    }

    pub fn restart(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .args(&self.args)
            .env("JSAGENT_LOG", "info,node_agent=debug");
        let log = self.dir.path().join(format!("jsagent.{}.log", self.starts));
        self.proc = Some(Proc::spawn(cmd, log));
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("agent running")
    }

    /// The agent's data dir (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The agent's token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("token")).expect("token file")
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        for i in 1..=self.starts {
            let p = self.dir.path().join(format!("jsagent.{i}.log"));
            all.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        all
    }
}

/// Redis (standalone by default; any [`RedisTarget`] with [`Cluster::start_on`]), one
/// controller, and agents `1:1`, `1:2`, … with the given roles.
pub struct Cluster<R: RedisTarget = Redis> {
    pub redis: R,
    pub controller: Controller,
    pub agents: Vec<Agent>,
    pub client: RedisClient,
}

impl Cluster<Redis> {
    pub fn start(agent_roles: &[&[&str]]) -> Cluster {
        Cluster::start_with(agent_roles, ControllerOpts::default())
    }

    pub fn start_with(agent_roles: &[&[&str]], opts: ControllerOpts) -> Cluster {
        Cluster::start_on(Redis::start(), agent_roles, opts, "")
    }

    /// One agent 1:1 with `config` (TOML) as its config file, online.
    pub fn start_configured(config: &str) -> Cluster {
        Cluster::start_on(Redis::start(), &[&[]], ControllerOpts::default(), config)
    }
}

impl<R: RedisTarget> Cluster<R> {
    /// A controller on `redis` and agents `1:1`, `1:2`, … with the given roles (and `config`,
    /// TOML, as their config file when not empty), all online.
    pub fn start_on(
        redis: R,
        agent_roles: &[&[&str]],
        opts: ControllerOpts,
        config: &str,
    ) -> Cluster<R> {
        let controller = Controller::start(&redis, opts);
        let agents: Vec<Agent> = agent_roles
            .iter()
            .enumerate()
            .map(|(i, roles)| {
                Agent::start_configured(&redis, &controller, 1, i as u64 + 1, roles, config)
            })
            .collect();
        let client = redis.client();
        let cluster = Cluster {
            redis,
            controller,
            agents,
            client,
        };
        for a in &cluster.agents {
            cluster.wait_online(a.gid, a.nid);
        }
        cluster
    }

    /// Waits until the agent said hello (it is in `agents`).
    pub fn wait_online(&self, gid: u64, nid: u64) {
        wait_for(
            &format!("agent {gid}:{nid} online"),
            Duration::from_secs(30),
            || self.client.online(gid, nid).then_some(()),
        );
    }

    /// Everything the processes logged, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for a in &self.agents {
            out.push_str(&format!(
                "--- agent {}:{} ---\n{}\n",
                a.gid,
                a.nid,
                a.logs()
            ));
        }
        out
    }
}

/// A command JSON with a fresh id.
pub fn command(gid: u64, nid: u64, cmd: &str, args: Value) -> Value {
    serde_json::json!({"id": uuid::Uuid::new_v4().to_string(), "gid": gid, "nid": nid, "cmd": cmd, "args": args})
}

/// `execute` of an executable with arguments.
pub fn execute(gid: u64, nid: u64, exe: &str, args: &[&str]) -> Value {
    command(
        gid,
        nid,
        "execute",
        serde_json::json!({"cmd": exe, "args": args}),
    )
}
