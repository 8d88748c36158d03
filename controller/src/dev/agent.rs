//! The one agent of `jsacc dev`: where its executable is, the files it runs with (config file,
//! token, log, data dir) and the child process, stopped with SIGTERM and, after a grace period,
//! SIGKILL.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long a stopping agent may take: it finishes posting its results and logs first.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// Exit code with which jsagent asks to be started again (its `restart` command).
pub const RESTART_CODE: i32 = 75;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot find jsagent next to {exe} nor on PATH: build it (cargo build -p node-agent) \
         or pass --agent-bin"
    )]
    NotFound { exe: PathBuf },
    #[error("--agent-bin {0} is not a file")]
    NotAFile(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not valid UTF-8, which the agent's config file needs")]
    NotUtf8(PathBuf),
    #[error("cannot start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
}

/// The agent's files, all under the dev data dir: `agent-G-N.toml`, `agent-G-N.token`,
/// `agent-G-N.log` and its own data dir `agent-G-N/`.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    pub config: PathBuf,
    pub token: PathBuf,
    pub log: PathBuf,
    pub data_dir: PathBuf,
}

impl AgentFiles {
    pub fn new(dev_dir: &Path, gid: u64, nid: u64) -> AgentFiles {
        let name = format!("agent-{gid}-{nid}");
        AgentFiles {
            config: dev_dir.join(format!("{name}.toml")),
            token: dev_dir.join(format!("{name}.token")),
            log: dev_dir.join(format!("{name}.log")),
            data_dir: dev_dir.join(name),
        }
    }
}

/// What the agent's config file says besides its files.
pub struct Settings<'a> {
    pub controller: &'a str,
    pub gid: u64,
    pub nid: u64,
    pub roles: &'a [String],
    pub ca_cert: &'a Path,
}

/// `given`, else `jsagent` next to the running executable, else `jsagent` on PATH.
pub fn find_binary(given: Option<&Path>) -> Result<PathBuf, AgentError> {
    if let Some(path) = given {
        return match path.is_file() {
            true => Ok(path.to_path_buf()),
            false => Err(AgentError::NotAFile(path.to_path_buf())),
        };
    }
    let name = format!("jsagent{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("jsacc"));
    let beside = exe.parent().map(|dir| dir.join(&name));
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(&name))
            .find(|p| p.is_file())
    });
    beside
        .filter(|p| p.is_file())
        .or(on_path)
        .ok_or(AgentError::NotFound { exe })
}

/// Writes the token (0600), the config file and an empty log, replacing earlier ones.
pub fn write_files(files: &AgentFiles, s: &Settings<'_>, token: &str) -> Result<(), AgentError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AgentError::Write { path, source }
    };
    crate::tls::write_private(&files.token, format!("{token}\n").as_bytes())
        .map_err(write_err(&files.token))?;
    std::fs::create_dir_all(&files.data_dir).map_err(write_err(&files.data_dir))?;
    std::fs::write(&files.config, config_text(files, s)?).map_err(write_err(&files.config))?;
    std::fs::write(&files.log, "").map_err(write_err(&files.log))
}

/// The TOML config file of DESIGN §9 (node-agent's `config.rs`).
fn config_text(files: &AgentFiles, s: &Settings<'_>) -> Result<String, AgentError> {
    // A JSON string is a valid TOML basic string: the same escapes (\" \\ \n \uXXXX …).
    let path = |p: &Path| {
        p.to_str()
            .map(|t| serde_json::Value::from(t).to_string())
            .ok_or_else(|| AgentError::NotUtf8(p.to_path_buf()))
    };
    let roles = serde_json::Value::from(s.roles.to_vec()).to_string();
    Ok(format!(
        "# Written by `jsacc dev` at each start; run this agent by hand with `jsagent -c <this file>`.\n\
         controller = {controller}\ngid = {gid}\nnid = {nid}\nroles = {roles}\n\
         token_file = {token}\nca_cert = {ca}\ndata_dir = {data}\n",
        controller = serde_json::Value::from(s.controller),
        gid = s.gid,
        nid = s.nid,
        token = path(&files.token)?,
        ca = path(s.ca_cert)?,
        data = path(&files.data_dir)?,
    ))
}

/// A running `jsagent -c <config>`; killed if dropped.
pub struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    /// Starts the agent with its output appended to its log. It gets no `JSAGENT_*` variable
    /// but `JSAGENT_LOG`: they would override its config file.
    pub fn spawn(bin: &Path, files: &AgentFiles) -> Result<AgentProcess, AgentError> {
        let log_err = |source| AgentError::Write {
            path: files.log.clone(),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.log)
            .map_err(log_err)?;
        let log2 = log.try_clone().map_err(log_err)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&files.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if overrides_config(&name) {
                cmd.env_remove(name);
            }
        }
        // Its own process group: Ctrl-C in a terminal signals the foreground group, and the
        // agent must be stopped by jsacc dev, in order (before the controller), not at once.
        #[cfg(unix)]
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|source| AgentError::Spawn {
            bin: bin.to_path_buf(),
            source,
        })?;
        Ok(AgentProcess { child })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the agent to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]; waits for the exit.
    pub async fn stop(mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        terminate(&mut self.child);
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                tracing::warn!(grace = ?STOP_GRACE, "the agent did not stop in time: SIGKILL");
                let _ = self.child.kill().await;
                self.child.wait().await.ok()
            }
        }
    }
}

fn overrides_config(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("JSAGENT_") && name != "JSAGENT_LOG"
}

#[cfg(unix)]
fn terminate(child: &mut Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    match child.id().and_then(|pid| i32::try_from(pid).ok()) {
        Some(pid) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        None => {
            let _ = child.start_kill();
        }
    }
}

#[cfg(not(unix))]
fn terminate(child: &mut Child) {
    let _ = child.start_kill();
}

/// The last `n` lines of the agent's log, to show why it stopped.
pub fn log_tail(files: &AgentFiles, n: usize) -> String {
    let text = std::fs::read_to_string(&files.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jsagent_log_is_passed_on() {
        assert!(overrides_config(OsStr::new("JSAGENT_CONTROLLER")));
        assert!(overrides_config(OsStr::new("JSAGENT_TOKEN")));
        assert!(!overrides_config(OsStr::new("JSAGENT_LOG")));
        assert!(!overrides_config(OsStr::new("PATH")));
    }

    #[test]
    fn the_config_file_escapes_paths() {
        let files = AgentFiles::new(Path::new("/tmp/a \"b\\"), 1, 2);
        let roles = ["web".to_owned()];
        let s = Settings {
            controller: "https://127.0.0.1:4000",
            gid: 1,
            nid: 2,
            roles: &roles,
            ca_cert: Path::new("/tmp/cert.pem"),
        };
        let text = config_text(&files, &s).unwrap();
        assert!(
            text.contains(r#"data_dir = "/tmp/a \"b\\/agent-1-2""#),
            "{text}"
        );
        assert!(text.contains(r#"roles = ["web"]"#), "{text}");
        assert!(text.contains("gid = 1\nnid = 2\n"), "{text}");
    }
}
