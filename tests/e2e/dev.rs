//! `jsacc dev` (issue 11 item 4): one process runs a private Redis, a controller and an agent,
//! prints how to reach them and `jsacc dev: ready`, answers commands, and on SIGTERM or SIGINT
//! stops all of its children and exits 0. An agent that dies ends it with an error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tests::{
    bin_dir, command, execute, free_port, gone, processes_with, wait_for, Proc, RedisClient,
};

const T: Duration = Duration::from_secs(60);
const READY: &str = "jsacc dev: ready";

/// A running `jsacc dev` and what it started.
struct Dev {
    proc: Proc,
    data: PathBuf,
    /// The private redis-server and the agent.
    children: Vec<u32>,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        let data = dir.join("dev data");
        let mut cmd = Command::new(bin_dir().join("jsacc"));
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(&data)
            .args(["-p", &free_port().to_string()])
            .env("JSACC_LOG", "info")
            .env_remove("JSACC_REDIS");
        // A `Dev` at once, so that a failed start is stopped with SIGTERM too.
        let mut dev = Dev {
            proc: Proc::spawn(cmd, dir.join("dev.log")),
            data,
            children: Vec::new(),
        };
        let proc = &mut dev.proc;
        wait_for("jsacc dev: ready", T, || {
            if let Some(status) = proc.exited() {
                panic!("jsacc dev exited ({status}):\n{}", proc.output());
            }
            proc.output().lines().any(|l| l == READY).then_some(())
        });
        let me = dev.proc.pid();
        // The agent's command line names its config file in the data dir; redis-server
        // replaces its own with "redis-server 127.0.0.1:<port>".
        dev.children = processes_with(&dev.data.display().to_string())
            .into_iter()
            .filter(|&pid| pid != me)
            .collect();
        let url = std::fs::read_to_string(dev.data.join("redis.url")).expect("redis.url");
        let port = url.trim().rsplit(':').next().expect("a port in redis.url");
        dev.children
            .extend(processes_with(&format!("redis-server 127.0.0.1:{port}")));
        dev
    }

    fn client(&self) -> RedisClient {
        let url = std::fs::read_to_string(self.data.join("redis.url")).expect("redis.url");
        RedisClient::new(url.trim())
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.proc.pid()).expect("pid");
        kill(Pid::from_raw(pid), signal).expect("kill");
    }

    /// Waits for the exit; its code, once every child is gone.
    fn exit_code(&mut self) -> Option<i32> {
        let status = wait_for("jsacc dev to exit", T, || self.proc.exited());
        for &pid in &self.children {
            wait_for(&format!("child {pid} to be gone"), T, || {
                gone(pid).then_some(())
            });
        }
        status.code()
    }
}

/// SIGTERM and a wait, not only the SIGKILL of [`Proc`]'s drop: a SIGKILLed `jsacc dev` leaves
/// its children running.
impl Drop for Dev {
    fn drop(&mut self) {
        if self.proc.exited().is_none() {
            self.proc.terminate(T);
        }
    }
}

/// What the banner tells a user to run, and a command run through the cluster.
fn check_cluster(dev: &Dev) {
    let out = dev.proc.output();
    let url_file = dev.data.join("redis.url");
    assert!(
        out.contains(&format!(
            "export JSACC_REDIS=\"$(cat '{}')\"",
            url_file.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("jsctl exec --gid 1 --nid 1 -- echo hello"),
        "{out}"
    );
    let url = std::fs::read_to_string(&url_file).expect("redis.url");
    assert!(
        !out.contains(url.trim()),
        "the Redis password is not printed"
    );
    assert_eq!(
        dev.children.len(),
        2,
        "a redis-server and a jsagent: {:?}\n{out}",
        dev.children
    );
    let r = dev
        .client()
        .run(&execute(1, 1, "echo", &["hello from dev"]), T);
    assert_eq!(r["state"].as_str(), Some("OK"), "{r}\n{out}");
    assert_eq!(r["streams"][0].as_str(), Some("hello from dev\n"), "{r}");
}

#[test]
fn dev_runs_a_cluster_and_sigterm_stops_all_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path());
    check_cluster(&dev);
    dev.signal(Signal::SIGTERM);
    assert_eq!(dev.exit_code(), Some(0), "{}", dev.proc.output());
    assert!(!dev.data.join("dev.pid").exists());
}

#[test]
fn sigint_stops_dev_and_a_restart_reuses_its_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path());
    dev.signal(Signal::SIGINT);
    assert_eq!(dev.exit_code(), Some(0), "{}", dev.proc.output());
    // Same data dir: same password, certificate and agent id; a new token.
    let again = Dev::start(dir.path());
    check_cluster(&again);
}

#[test]
fn a_second_dev_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(dir.path());
    let mut cmd = Command::new(bin_dir().join("jsacc"));
    cmd.arg("dev").arg("--data-dir").arg(&dev.data);
    let mut second = Proc::spawn(cmd, dir.path().join("second.log"));
    let status = wait_for("the second jsacc dev to exit", T, || second.exited());
    assert_eq!(status.code(), Some(1), "{}", second.output());
    assert!(
        second.output().contains("another jsacc dev"),
        "{}",
        second.output()
    );
    check_cluster(&dev);
}

#[test]
fn an_agent_that_dies_ends_dev_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path());
    let agents = processes_with("agent-1-1.toml");
    let agent = agents
        .iter()
        .copied()
        .find(|pid| dev.children.contains(pid))
        .expect("the agent");
    kill(
        Pid::from_raw(i32::try_from(agent).expect("pid")),
        Signal::SIGKILL,
    )
    .expect("kill");
    assert_eq!(dev.exit_code(), Some(1), "{}", dev.proc.output());
    assert!(
        dev.proc.output().contains("the agent exited by itself"),
        "{}",
        dev.proc.output()
    );
}

/// jsagent exits 75 on its `restart` command, asking to be started again: `jsacc dev` does.
#[test]
fn an_agent_that_asks_for_a_restart_is_started_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path());
    let client = dev.client();
    let r = client.run(&command(1, 1, "restart", serde_json::json!({})), T);
    assert_eq!(r["state"].as_str(), Some("OK"), "{r}");
    wait_for("the restart", T, || {
        dev.proc
            .output()
            .contains("asked to be restarted")
            .then_some(())
    });
    let r = client.run(&execute(1, 1, "echo", &["again"]), T);
    assert_eq!(
        r["state"].as_str(),
        Some("OK"),
        "{r}\n{}",
        dev.proc.output()
    );
    // The new agent is a child too.
    dev.children = processes_with(&dev.data.display().to_string())
        .into_iter()
        .filter(|&pid| pid != dev.proc.pid())
        .chain(dev.children.iter().copied())
        .collect();
    dev.signal(Signal::SIGTERM);
    assert_eq!(dev.exit_code(), Some(0), "{}", dev.proc.output());
}
