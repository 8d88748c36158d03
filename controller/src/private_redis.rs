//! The private `redis-server` that `jsacc` starts when it is given no `-r`, so one command gives
//! a working controller. Its data (append-only file) lives in `<data-dir>/redis`, its URL in
//! `<data-dir>/redis.url` (read by `jsacc token` and by deploy/quickstart.sh).
//!
//! Whoever can reach this Redis can push commands and mint agent tokens, i.e. run anything on
//! every node, so it is private to the user that runs `jsacc`:
//! - a random password, made once into `<data-dir>/redis/password` (a restart reuses it, so a
//!   server left running by a killed controller stays reachable), given to redis-server in a
//!   config file (`redis/redis.conf`), never on its command line (`/proc/<pid>/cmdline` is
//!   world-readable);
//! - the server listens on 127.0.0.1 only, in protected mode;
//! - `<data-dir>` and `<data-dir>/redis` are 0700; `redis.url` (which holds the password), the
//!   password and the config file are 0600, each written to a 0600 temporary file then renamed, so
//!   no reader ever sees a partial or a world-readable copy;
//! - a server recorded by an earlier version, which answers without a password, is shut down
//!   (its data persists in its append-only file) and started again with the password.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rand::RngCore;
use tokio::process::{Child, Command};

use crate::target::Target;

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
    #[error("cannot read {path} (readable by the user that runs jsacc only): {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} must hold one password of letters, digits and -._~ only")]
    BadPassword { path: PathBuf },
    #[error(
        "the redis-server recorded in {url_file} (127.0.0.1:{port}) refuses the password in \
         {password_file}: if it runs on this data dir, stop it; if it does not, delete {url_file}"
    )]
    WrongPassword {
        url_file: PathBuf,
        password_file: PathBuf,
        port: u16,
    },
    #[error("the unprotected redis-server of an earlier run (127.0.0.1:{port}) did not shut down within 10 s; stop it")]
    StillRunning { port: u16 },
}

/// The files of a data dir's private Redis.
struct Files {
    data_dir: PathBuf,
    /// `<data-dir>/redis`: the server's working directory (append-only file, log, config).
    dir: PathBuf,
    url: PathBuf,
    password: PathBuf,
    conf: PathBuf,
    log: PathBuf,
}

impl Files {
    fn new(data_dir: &Path) -> Files {
        let dir = data_dir.join("redis");
        Files {
            data_dir: data_dir.to_path_buf(),
            url: url_file(data_dir),
            password: dir.join("password"),
            conf: dir.join("redis.conf"),
            log: dir.join("redis.log"),
            dir,
        }
    }
}

/// A running private redis-server; `stop` shuts it down (it is killed if this is dropped; it runs
/// in its own process group). `child` is `None` when an earlier controller's server was still
/// alive and reused.
pub struct PrivateRedis {
    /// `redis://default:<password>@127.0.0.1:<port>`: never log or print it, see [`Self::shown_url`].
    pub url: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

fn url_file(data_dir: &Path) -> PathBuf {
    data_dir.join("redis.url")
}

/// The URL (with its password) of the data dir's private redis-server, for commands that do not
/// start it.
pub fn recorded_url(data_dir: &Path) -> Result<String, PrivateRedisError> {
    let path = url_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(PrivateRedisError::NotRunning(path))
        }
        // E.g. permission denied: another user than jsacc's asks.
        Err(source) => Err(PrivateRedisError::Unreadable { path, source }),
    }
}

fn url_with(password: &str, port: u16) -> String {
    format!("redis://default:{password}@127.0.0.1:{port}")
}

impl PrivateRedis {
    /// Reuses the data dir's redis-server if it still answers to its password, else starts one
    /// on a free port (shutting down first an unprotected one an earlier version left running).
    pub async fn start(data_dir: &Path) -> Result<PrivateRedis, PrivateRedisError> {
        let files = Files::new(data_dir);
        private_dir(&files.data_dir)?;
        private_dir(&files.dir)?;
        let password = password(&files.password)?;
        let (url, child) = match reuse(&files, &password).await? {
            Some(url) => (url, None),
            None => {
                let (url, child) = spawn(&files, &password).await?;
                (url, Some(child))
            }
        };
        write_private(&files.url, format!("{url}\n").as_bytes())?;
        Ok(PrivateRedis {
            url,
            data_dir: data_dir.to_path_buf(),
            child,
        })
    }

    /// The URL with its password masked, for logs and the start-up line.
    pub fn shown_url(&self) -> String {
        Target::parse(&self.url).map_or_else(|_| "redis://***".to_owned(), |t| t.to_string())
    }

    /// The line `jsacc` prints at start: the masked URL and where the full one is.
    pub fn banner(&self) -> String {
        format!(
            "private redis-server: {} (full URL in {}, readable by this user only; data in {})",
            self.shown_url(),
            url_file(&self.data_dir).display(),
            self.data_dir.join("redis").display()
        )
    }

    /// The server's process id, when this controller started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Asks redis-server to shut down (flushing its append-only file), then waits for it.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(mut conn) = connect(&self.url).await {
            let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut conn).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// The server's password: made once (32 random bytes, hex) and kept, so a restarted controller
/// reaches the server an earlier one left running.
fn password(path: &Path) -> Result<String, PrivateRedisError> {
    let io = |source| PrivateRedisError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let password = text.trim();
            let url_safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            if password.is_empty() || !password.bytes().all(url_safe) {
                return Err(PrivateRedisError::BadPassword {
                    path: path.to_path_buf(),
                });
            }
            restrict(path, 0o600).map_err(io)?;
            Ok(password.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let password = hex::encode(bytes);
            write_private(path, format!("{password}\n").as_bytes())?;
            Ok(password)
        }
        Err(source) => Err(io(source)),
    }
}

/// What answers on a recorded port.
enum Probe {
    /// Nothing (or nothing that speaks Redis in time).
    Silent,
    /// A server that takes our password.
    Ours,
    /// A server that answers without a password (the private Redis of an earlier version).
    Open,
    /// A password-protected server that refuses ours.
    Refused,
}

async fn probe(port: u16, password: &str) -> Probe {
    match ping(&format!("redis://127.0.0.1:{port}")).await {
        Ok(()) => Probe::Open,
        Err(e)
            if e.code() == Some("NOAUTH") || e.kind() == redis::ErrorKind::AuthenticationFailed =>
        {
            match ping(&url_with(password, port)).await {
                Ok(()) => Probe::Ours,
                Err(_) => Probe::Refused,
            }
        }
        Err(_) => Probe::Silent,
    }
}

/// The URL of the recorded server when it still runs and takes our password; `None` when a new
/// one must be started.
async fn reuse(files: &Files, password: &str) -> Result<Option<String>, PrivateRedisError> {
    let Ok(recorded) = recorded_url(&files.data_dir) else {
        return Ok(None);
    };
    let recorded_port = Target::parse(&recorded)
        .ok()
        .and_then(|t| t.nodes.first().map(|&(_, port)| port));
    let Some(port) = recorded_port else {
        return Ok(None);
    };
    match probe(port, password).await {
        Probe::Silent => Ok(None),
        Probe::Ours => {
            tracing::info!(port, "reusing the private redis-server of an earlier run");
            Ok(Some(url_with(password, port)))
        }
        Probe::Refused => Err(PrivateRedisError::WrongPassword {
            url_file: files.url.clone(),
            password_file: files.password.clone(),
            port,
        }),
        Probe::Open if serves(port, &files.dir).await => {
            tracing::warn!(
                port,
                "the private redis-server of an earlier run has no password: shutting it down \
                 and starting it again with one (its data persists in its append-only file)"
            );
            shut_down_open(port).await?;
            Ok(None)
        }
        Probe::Open => {
            tracing::warn!(
                port,
                "the redis-server on the recorded port does not run on this data dir: leaving it alone"
            );
            Ok(None)
        }
    }
}

/// Whether the password-less server on `port` has `dir` as its working directory.
async fn serves(port: u16, dir: &Path) -> bool {
    let answer = async {
        let mut conn = connect(&format!("redis://127.0.0.1:{port}")).await?;
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("dir")
            .query_async::<Vec<String>>(&mut conn)
            .await
    };
    match answer.await {
        Ok(pair) => match (pair.get(1), std::fs::canonicalize(dir)) {
            (Some(theirs), Ok(ours)) => std::fs::canonicalize(theirs).is_ok_and(|t| t == ours),
            _ => false,
        },
        Err(_) => false,
    }
}

async fn shut_down_open(port: u16) -> Result<(), PrivateRedisError> {
    let url = format!("redis://127.0.0.1:{port}");
    if let Ok(mut conn) = connect(&url).await {
        // The connection closes with the server: the error that makes is the expected answer.
        let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut conn).await;
    }
    for _ in 0..100 {
        if ping(&url).await.is_err() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(PrivateRedisError::StillRunning { port })
}

/// Starts redis-server on a free port with the password from its config file; returns its URL
/// once it answers.
async fn spawn(files: &Files, password: &str) -> Result<(String, Child), PrivateRedisError> {
    let conf = format!(
        "# Written by jsacc at every start of its private redis-server; the other settings are\n\
         # on its command line. Only the password is here: a command line is world-readable.\n\
         requirepass {password}\n"
    );
    write_private(&files.conf, conf.as_bytes())?;
    let port = free_port().map_err(PrivateRedisError::Spawn)?;
    let mut command = Command::new("redis-server");
    command
        .arg(&files.conf)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--protected-mode",
            "yes",
            "--appendonly",
            "yes",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&files.dir)
        .arg("--logfile")
        .arg(&files.log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    // Its own process group: a terminal's Ctrl-C then reaches only the controller, which stops
    // it last (`jsacc dev` stops its agent first), instead of pulling Redis from under both.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(PrivateRedisError::Spawn)?;
    let url = url_with(password, port);
    for _ in 0..100 {
        if ping(&url).await.is_ok() {
            return Ok((url, child));
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill().await;
    Err(PrivateRedisError::NotReady {
        log: files.log.clone(),
    })
}

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn ping(url: &str) -> redis::RedisResult<()> {
    let mut conn = connect(url).await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Creates `dir` if needed and makes it readable by this user only.
fn private_dir(dir: &Path) -> Result<(), PrivateRedisError> {
    let io = |source| PrivateRedisError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    restrict(dir, 0o700).map_err(io)
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file created 0600 and renamed over it: there is
/// no moment when `path` is partial or readable by others.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PrivateRedisError> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| PrivateRedisError::Io { path, source }
    };
    // A leftover of a crash, maybe with other permissions: create_new must make a fresh one.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    //! Against real redis-server processes, each in a fresh temporary data dir.
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A temporary data dir, removed on drop.
    struct DataDir(PathBuf);

    impl DataDir {
        fn new() -> DataDir {
            let path =
                std::env::temp_dir().join(format!("jsacc-private-redis-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir(&path).unwrap();
            // As a umask of 022 makes it: the start must close it.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            DataDir(path)
        }
    }

    impl Drop for DataDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A redis-server started by hand, as an earlier version (or someone else) left it; killed on drop.
    struct Stray {
        child: std::process::Child,
        port: u16,
    }

    impl Stray {
        async fn start(dir: &Path, extra: &[&str]) -> Stray {
            std::fs::create_dir_all(dir).unwrap();
            let port = free_port().unwrap();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--appendonly", "yes", "--save", ""])
                .args(extra)
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server on PATH");
            let stray = Stray { child, port };
            for _ in 0..100 {
                if !matches!(probe(port, "-").await, Probe::Silent) {
                    return stray;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the stray redis-server did not start");
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// Whether it exited within 10 s.
        async fn exits(&mut self) -> bool {
            for _ in 0..200 {
                if self.child.try_wait().unwrap().is_some() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    }

    impl Drop for Stray {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    async fn query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        cmd.query_async(&mut connect(url).await?).await
    }

    async fn set(url: &str, key: &str, value: &str) {
        let _: () = query(url, redis::cmd("SET").arg(key).arg(value))
            .await
            .unwrap();
    }

    async fn get(url: &str, key: &str) -> Option<String> {
        query(url, redis::cmd("GET").arg(key)).await.unwrap()
    }

    fn port_of(url: &str) -> u16 {
        Target::parse(url).unwrap().nodes[0].1
    }

    fn stored_password(data: &Path) -> String {
        std::fs::read_to_string(data.join("redis/password"))
            .unwrap()
            .trim()
            .to_owned()
    }

    #[tokio::test]
    async fn a_new_server_is_private_and_needs_its_password() {
        let data = DataDir::new();
        let redis = PrivateRedis::start(&data.0).await.unwrap();
        let password = stored_password(&data.0);
        assert_eq!(password.len(), 64, "32 random bytes, hex");

        assert_eq!(mode(&data.0), 0o700);
        assert_eq!(mode(&data.0.join("redis")), 0o700);
        for file in ["redis.url", "redis/password", "redis/redis.conf"] {
            assert_eq!(mode(&data.0.join(file)), 0o600, "{file}");
        }
        assert_eq!(recorded_url(&data.0).unwrap(), redis.url);
        assert!(redis.url.contains(&password));

        let port = port_of(&redis.url);
        let anonymous = ping(&format!("redis://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert_eq!(anonymous.code(), Some("NOAUTH"), "{anonymous}");
        ping(&redis.url).await.unwrap();
        let bind: Vec<String> = query(&redis.url, redis::cmd("CONFIG").arg("GET").arg("bind"))
            .await
            .unwrap();
        assert_eq!(bind[1], "127.0.0.1");
        let protected: Vec<String> = query(
            &redis.url,
            redis::cmd("CONFIG").arg("GET").arg("protected-mode"),
        )
        .await
        .unwrap();
        assert_eq!(protected[1], "yes");

        let pid = redis.pid().expect("started by this run");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(cmdline.contains("redis"), "{cmdline}");
        assert!(
            !cmdline.contains(&password),
            "the password is on the command line"
        );
        assert!(!redis.banner().contains(&password), "{}", redis.banner());
        assert!(
            redis.banner().contains(":***@127.0.0.1"),
            "{}",
            redis.banner()
        );

        redis.stop().await;
        assert!(ping(&format!("redis://127.0.0.1:{port}")).await.is_err());
    }

    #[tokio::test]
    async fn a_restart_reuses_the_password_and_the_data() {
        let data = DataDir::new();
        let first = PrivateRedis::start(&data.0).await.unwrap();
        set(&first.url, "kept", "across restarts").await;
        let password = stored_password(&data.0);
        first.stop().await;

        let second = PrivateRedis::start(&data.0).await.unwrap();
        assert!(second.pid().is_some(), "a new server");
        assert_eq!(stored_password(&data.0), password);
        assert!(second.url.contains(&password));
        assert_eq!(
            get(&second.url, "kept").await.as_deref(),
            Some("across restarts")
        );
        second.stop().await;
    }

    #[tokio::test]
    async fn a_server_left_running_is_reused() {
        let data = DataDir::new();
        let first = PrivateRedis::start(&data.0).await.unwrap();
        let second = PrivateRedis::start(&data.0).await.unwrap();
        assert_eq!(second.pid(), None, "the running server is reused");
        assert_eq!(second.url, first.url);
        second.stop().await;
        ping(&first.url).await.unwrap();
        first.stop().await;
    }

    #[tokio::test]
    async fn an_unprotected_server_of_an_earlier_run_is_restarted_with_the_password() {
        let data = DataDir::new();
        let mut old = Stray::start(&data.0.join("redis"), &[]).await;
        // What the earlier version recorded: no password, and a world-readable file.
        std::fs::write(data.0.join("redis.url"), format!("{}\n", old.url())).unwrap();
        std::fs::set_permissions(
            data.0.join("redis.url"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        set(&old.url(), "job:old", "still here").await;

        let redis = PrivateRedis::start(&data.0).await.unwrap();
        assert!(old.exits().await, "the unprotected server was shut down");
        assert!(redis.pid().is_some(), "and started again by this run");
        assert_eq!(
            get(&redis.url, "job:old").await.as_deref(),
            Some("still here")
        );
        let port = port_of(&redis.url);
        let anonymous = ping(&format!("redis://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert_eq!(anonymous.code(), Some("NOAUTH"), "{anonymous}");
        assert_eq!(mode(&data.0.join("redis.url")), 0o600);
        assert_eq!(recorded_url(&data.0).unwrap(), redis.url);
        redis.stop().await;
    }

    #[tokio::test]
    async fn an_unprotected_server_of_another_dir_is_left_alone() {
        let data = DataDir::new();
        let elsewhere = DataDir::new();
        let foreign = Stray::start(&elsewhere.0, &[]).await;
        std::fs::write(data.0.join("redis.url"), foreign.url()).unwrap();

        let redis = PrivateRedis::start(&data.0).await.unwrap();
        assert_ne!(port_of(&redis.url), foreign.port);
        ping(&foreign.url())
            .await
            .expect("the other server still runs");
        redis.stop().await;
    }

    #[tokio::test]
    async fn a_recorded_server_that_refuses_the_password_is_an_error() {
        let data = DataDir::new();
        let elsewhere = DataDir::new();
        let other = Stray::start(&elsewhere.0, &["--requirepass", "not-ours"]).await;
        std::fs::write(data.0.join("redis.url"), other.url()).unwrap();

        let err = PrivateRedis::start(&data.0).await.err().expect("an error");
        assert!(
            matches!(err, PrivateRedisError::WrongPassword { port, .. } if port == other.port),
            "{err}"
        );
    }

    #[test]
    fn a_password_file_with_unsafe_characters_is_refused() {
        let data = DataDir::new();
        let path = data.0.join("password");
        std::fs::write(&path, "a@b/c\n").unwrap();
        assert!(matches!(
            password(&path),
            Err(PrivateRedisError::BadPassword { .. })
        ));
    }

    #[test]
    fn a_private_file_replaces_a_world_readable_one() {
        let data = DataDir::new();
        let path = data.0.join("redis.url");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn an_unreadable_url_file_is_not_reported_as_missing() {
        let data = DataDir::new();
        assert!(matches!(
            recorded_url(&data.0),
            Err(PrivateRedisError::NotRunning(_))
        ));
        std::fs::create_dir(data.0.join("redis.url")).unwrap();
        assert!(matches!(
            recorded_url(&data.0),
            Err(PrivateRedisError::Unreadable { .. })
        ));
    }
}
