//! The Windows jsagent under Wine (issue 3): the agent built for `x86_64-pc-windows-gnu` by
//! `scripts/windows-agent.sh` runs against a real controller and Redis on this machine, runs
//! `cmd /C echo …` to `OK`, and kills a timed-out job's whole tree (its Job Object). Registered
//! as a service (`sc create`, as the install script does), the SCM starts it and `sc stop` stops
//! it gracefully. `jsagent.exe enroll` (issue 14) writes a config the agent then runs from, and
//! with `--install-service` registers and starts the service itself.
//!
//! Ignored by default (it needs Wine and the Windows build): `scripts/test-all.sh` builds the
//! agent and runs it with `JSACC_WINDOWS_AGENT=<path of jsagent.exe>` and `--ignored`.

use std::time::Duration;

use serde_json::json;
use tests::{execute, processes_with, wait_for, Agent, Controller, ControllerOpts, Redis};

/// The jsagent.exe under test.
fn agent_exe() -> String {
    std::env::var("JSACC_WINDOWS_AGENT")
        .expect("JSACC_WINDOWS_AGENT must name jsagent.exe (scripts/windows-agent.sh build)")
}

/// Wine starts slowly (its prefix, wineserver) on a shared machine.
const T: Duration = Duration::from_secs(180);

/// The tests share one Wine prefix, and each ends by killing its wineserver: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills what is left of Wine in its prefix when the test ends, pass or fail.
struct WineServer;

impl Drop for WineServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("wineserver").arg("-k").status();
    }
}

/// What a Wine test runs against: Redis and a controller on this machine, and the prefix to
/// itself until it ends. Fields drop in order: Wine is killed before the next test may start.
struct Setup {
    exe: String,
    redis: Redis,
    controller: Controller,
    _wine: WineServer,
    _serial: std::sync::MutexGuard<'static, ()>,
}

fn setup() -> Setup {
    let exe = agent_exe();
    let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let redis = Redis::start();
    let controller = Controller::start(&redis, ControllerOpts::default());
    Setup {
        exe,
        redis,
        controller,
        _wine: WineServer,
        _serial: serial,
    }
}

#[test]
#[ignore = "needs Wine and jsagent.exe: run by scripts/test-all.sh (step wine)"]
fn the_windows_agent_runs_cmd_and_kills_a_timed_out_tree() {
    let Setup {
        exe,
        redis,
        controller,
        ..
    } = &setup();
    let program = vec!["wine".into(), exe.clone()];
    let mut agent = Agent::start_program(redis, controller, 1, 1, program);
    let client = redis.client();
    let online = wait_for_online(&client, || agent.proc().exited().is_none());
    assert!(
        online,
        "the Windows agent never came online:\n{}",
        agent.logs()
    );

    let echo = execute(1, 1, "cmd", &["/C", "echo", "hello from windows"]);
    let r = client.run(&echo, T);
    assert_eq!(r["state"], "OK", "{r}\n{}", agent.logs());
    assert!(
        r["streams"][0]
            .as_str()
            .unwrap_or_default()
            .contains("hello from windows"),
        "{r}"
    );

    // A child cmd that loops for ever, under the job's cmd: both must go at the time limit.
    let marker = format!("jsaccwine{}", std::process::id());
    let looping = format!("for /L %i in (0,0,1) do rem {marker}");
    let mut slow = execute(1, 1, "cmd", &["/C", "cmd", "/C", &looping]);
    slow["args"]["max_time"] = json!(20);
    client.push(&slow);
    // Both cmds run (so the check below is not vacuous), then the time limit ends them.
    wait_for(
        "the job's cmd and its child running",
        Duration::from_secs(20),
        || (processes_with(&marker).len() >= 2).then_some(()),
    );
    let id = slow["id"].as_str().expect("id");
    let r = client.result(id, T).expect("a result for the looping job");
    assert_eq!(r["state"], "TIMEOUT", "{r}\n{}", agent.logs());
    wait_for("the timed-out tree gone", Duration::from_secs(30), || {
        processes_with(&marker).is_empty().then_some(())
    });
}

/// Waits until the agent said hello; `false` if it stopped being `alive` first or time ran out.
fn wait_for_online(client: &tests::RedisClient, mut alive: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + T;
    while std::time::Instant::now() < deadline {
        if client.online(1, 1) {
            return true;
        }
        if !alive() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A service registered with Wine's service manager; stopped and deleted when dropped.
struct Service(String);

impl Service {
    fn create(name: &str, command_line: &str) -> Service {
        let out = sc(&["create", name, "binPath=", command_line]);
        let service = Service(name.to_owned());
        let (state, _) = service.query();
        assert_eq!(state, "STOPPED", "sc create: {out}");
        service
    }

    /// `STATE` in `sc query`, e.g. `RUNNING`, and `WIN32_EXIT_CODE`.
    fn query(&self) -> (String, Option<u32>) {
        let out = sc(&["query", &self.0]);
        let field = |name: &str| -> Option<String> {
            let line = out.lines().find(|l| l.trim_start().starts_with(name))?;
            let value = line.split_once(':')?.1.split_whitespace();
            Some(value.collect::<Vec<_>>().join(" "))
        };
        let state = field("STATE").and_then(|v| v.split(' ').nth(1).map(str::to_owned));
        let exit = field("WIN32_EXIT_CODE").and_then(|v| v.split(' ').next()?.parse().ok());
        (state.unwrap_or_else(|| out.clone()), exit)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        sc(&["stop", &self.0]);
        sc(&["delete", &self.0]);
    }
}

/// Runs Wine's `sc.exe`; its output, stdout and stderr together.
///
/// The output goes through a file, not a pipe: the first Wine program of a prefix starts Wine's
/// service manager, which hands its stdio on to the services it starts, and a service whose
/// stderr is a pipe nobody reads any more dies of SIGPIPE the first time Wine writes to it.
fn sc(args: &[&str]) -> String {
    let out = tempfile::tempfile().expect("temp file");
    let status = std::process::Command::new("wine")
        .arg("sc")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out.try_clone().expect("dup"))
        .status()
        .expect("wine sc");
    let mut out = out;
    let mut text = String::new();
    std::io::Seek::rewind(&mut out).expect("rewind");
    std::io::Read::read_to_string(&mut out, &mut text).expect("sc output");
    if !status.success() {
        text.push_str(&format!("\n(sc {args:?}: {status})"));
    }
    text
}

/// A path of this machine as Wine's Windows programs see it wherever their current directory
/// is (a service starts in `C:\windows\system32`): `/tmp/x` → `Z:\tmp\x`. Other text is kept.
fn windows_path(arg: &str) -> String {
    match arg.strip_prefix('/') {
        Some(rest) => format!("Z:\\{}", rest.replace('/', "\\")),
        None => arg.to_owned(),
    }
}

#[test]
#[ignore = "needs Wine and jsagent.exe: run by scripts/test-all.sh (step wine)"]
fn the_windows_agent_runs_as_a_service_and_sc_stop_stops_it_gracefully() {
    let Setup {
        exe,
        redis,
        controller,
        ..
    } = &setup();
    let agent = Agent::prepare(redis, controller, 1, 1);
    let exe = std::fs::canonicalize(exe).expect("jsagent.exe");
    let mut command_line = vec![windows_path(&exe.display().to_string()), "--service".into()];
    command_line.extend(agent.args().iter().map(|a| windows_path(a)));
    let name = format!("jsagent-e2e-{}", std::process::id());
    let service = Service::create(&name, &command_line.join(" "));
    sc(&["start", &name]);
    let client = redis.client();
    let log = agent.data_dir().join("jsagent.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let online = wait_for_online(&client, || service.query().0 != "STOPPED");
    assert!(
        online,
        "the service never came online: {:?}\n{}",
        service.query(),
        log_text()
    );
    assert!(
        log_text().contains("running as a Windows service"),
        "{}",
        log_text()
    );

    let echo = execute(1, 1, "cmd", &["/C", "echo", "hello from a service"]);
    client.push(&echo);
    let r = client
        .result(echo["id"].as_str().expect("id"), T)
        .unwrap_or_else(|| {
            let id = echo["id"].as_str().unwrap_or_default();
            let state = client.job_field(id, "state");
            let service = service.query();
            panic!(
                "no result for {echo} (job {state:?}, service {service:?}):\n{}",
                log_text()
            )
        });
    assert_eq!(r["state"], "OK", "{r}\n{}", log_text());

    // A job still running when the service is stopped is ended and reported, like on SIGTERM.
    let marker = format!("jsaccsvc{}", std::process::id());
    let looping = format!("for /L %i in (0,0,1) do rem {marker}");
    let slow = execute(1, 1, "cmd", &["/C", &looping]);
    client.push(&slow);
    wait_for("the job running", T, || {
        (!processes_with(&marker).is_empty()).then_some(())
    });
    sc(&["stop", &name]);
    let (_, exit) = wait_for("the service stopped", T, || {
        let (state, exit) = service.query();
        (state == "STOPPED").then_some((state, exit))
    });
    assert_eq!(exit, Some(0), "a clean stop\n{}", log_text());
    let id = slow["id"].as_str().expect("id");
    let r = client.result(id, T).expect("the stopped job's result");
    assert_eq!(
        (&r["state"], &r["data"]),
        (&json!("ERROR"), &json!("agent stopped")),
        "{r}"
    );
    assert!(
        processes_with(&marker).is_empty(),
        "the job's process outlived the service"
    );
    assert!(log_text().contains("jsagent stopping"), "{}", log_text());
}

/// Runs `wine <exe> args…`; its exit status and output (through a file, as [`sc`] explains).
fn wine(exe: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = tempfile::tempfile().expect("temp file");
    let status = std::process::Command::new("wine")
        .arg(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out.try_clone().expect("dup"))
        .status()
        .expect("wine runs");
    let mut out = out;
    let mut text = String::new();
    std::io::Seek::rewind(&mut out).expect("rewind");
    std::io::Read::read_to_string(&mut out, &mut text).expect("output");
    (status, text)
}

/// `jsagent.exe enroll` with a code for 1:1 into `<dir>/agent` (as Wine names it), plus `extra`.
fn enroll_windows(setup: &Setup, dir: &std::path::Path, extra: &[&str]) -> String {
    let fingerprint = super::enroll::printed_fingerprint(&setup.controller);
    let code = super::enroll::create_code(&setup.redis, &["--gid", "1", "--nid", "1"]);
    let data = windows_path(&dir.join("agent").display().to_string());
    let url = setup.controller.url();
    let mut args = vec!["enroll", &code, "--controller", &url];
    args.extend(["--ca-fingerprint", &fingerprint, "--data-dir", &data]);
    args.extend(extra);
    let (status, text) = wine(&setup.exe, &args);
    assert!(status.success(), "jsagent.exe enroll: {status}\n{text}");
    assert!(text.contains("enrolled as agent 1:1"), "{text}");
    assert!(dir.join("agent").join("agent.toml").exists(), "{text}");
    text
}

#[test]
#[ignore = "needs Wine and jsagent.exe: run by scripts/test-all.sh (step wine)"]
fn the_windows_agent_enrolls_and_runs_from_the_written_config() {
    let setup = setup();
    let dir = tempfile::tempdir().expect("tempdir");
    enroll_windows(&setup, dir.path(), &[]);
    let config = windows_path(
        &dir.path()
            .join("agent")
            .join("agent.toml")
            .display()
            .to_string(),
    );
    let mut cmd = std::process::Command::new("wine");
    cmd.args([setup.exe.as_str(), "-c", &config]);
    let mut agent = tests::Proc::spawn(cmd, dir.path().join("jsagent.log"));
    let client = setup.redis.client();
    let online = wait_for_online(&client, || agent.exited().is_none());
    assert!(
        online,
        "the enrolled agent never came online:\n{}",
        agent.output()
    );
    let echo = execute(1, 1, "cmd", &["/C", "echo", "enrolled on windows"]);
    let r = client.run(&echo, T);
    assert_eq!(r["state"], "OK", "{r}\n{}", agent.output());
}

#[test]
#[ignore = "needs Wine and jsagent.exe: run by scripts/test-all.sh (step wine)"]
fn the_windows_agent_enrolls_as_a_service() {
    let setup = setup();
    let dir = tempfile::tempdir().expect("tempdir");
    // Registered as `jsagent`: stopped and deleted at the end, pass or fail.
    let service = Service("jsagent".into());
    let text = enroll_windows(&setup, dir.path(), &["--install-service"]);
    assert!(text.contains("registered the service jsagent"), "{text}");
    let client = setup.redis.client();
    let log = dir.path().join("agent").join("jsagent.log");
    let online = wait_for_online(&client, || service.query().0 != "STOPPED");
    assert!(
        online,
        "the enrolled service never came online: {:?}\n{}",
        service.query(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
