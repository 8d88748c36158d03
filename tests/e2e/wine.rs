//! The Windows jsagent under Wine (issue 3): the agent built for `x86_64-pc-windows-gnu` by
//! `scripts/windows-agent.sh` runs against a real controller and Redis on this machine, runs
//! `cmd /C echo …` to `OK`, and kills a timed-out job's whole tree (its Job Object).
//!
//! Ignored by default (it needs Wine and the Windows build): `scripts/test-all.sh` builds the
//! agent and runs it with `JSACC_WINDOWS_AGENT=<path of jsagent.exe>` and `--ignored`.

use std::time::Duration;

use serde_json::json;
use tests::{execute, processes_with, wait_for, Agent, Controller, ControllerOpts, Redis};

/// Wine starts slowly (its prefix, wineserver) on a shared machine.
const T: Duration = Duration::from_secs(180);

/// Kills what is left of Wine in its prefix when the test ends, pass or fail.
struct WineServer;

impl Drop for WineServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("wineserver").arg("-k").status();
    }
}

#[test]
#[ignore = "needs Wine and jsagent.exe: run by scripts/test-all.sh (step wine)"]
fn the_windows_agent_runs_cmd_and_kills_a_timed_out_tree() {
    let exe = std::env::var("JSACC_WINDOWS_AGENT")
        .expect("JSACC_WINDOWS_AGENT must name jsagent.exe (scripts/windows-agent.sh build)");
    let _wine = WineServer;
    let redis = Redis::start();
    let controller = Controller::start(&redis, ControllerOpts::default());
    let mut agent = Agent::start_program(&redis, &controller, 1, 1, vec!["wine".into(), exe]);
    let client = redis.client();
    let online = wait_for_online(&client, &mut agent);
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

/// Waits until the agent said hello; `false` if its process ended first or time ran out.
fn wait_for_online(client: &tests::RedisClient, agent: &mut Agent) -> bool {
    let deadline = std::time::Instant::now() + T;
    let mut conn = client.blocking();
    while std::time::Instant::now() < deadline {
        let seen: Option<f64> = redis::cmd("ZSCORE")
            .arg("agents")
            .arg("1:1")
            .query(&mut conn)
            .unwrap_or(None);
        if seen.is_some() {
            return true;
        }
        if agent.proc().exited().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
