//! Nothing lost, nothing run twice: 1000 jobs while the controller is SIGKILLed and restarted
//! twice and the agent once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{execute, gone, Cluster, ControllerOpts};

#[test]
fn a_thousand_jobs_survive_controller_and_agent_kills() {
    let opts = ControllerOpts {
        extra: vec!["--lease".into(), "5".into()],
        ..Default::default()
    };
    let mut c = Cluster::start_with(&[&[]], opts);
    let ran = c.agents[0].dir.path().join("ran.log");
    let ran_s = ran.display().to_string();
    let cmds: Vec<Value> = (0..1000)
        .map(|i| {
            let mut cmd = execute(1, 1, "sh", &["-c", &format!("echo job-{i} >> {ran_s}")]);
            cmd["id"] = json!(format!("job-{i}-{}", uuid::Uuid::new_v4()));
            cmd
        })
        .collect();
    // Push in one LPUSH of 1000, then kill things while they are routed and run.
    let mut push = redis::cmd("LPUSH");
    push.arg("cmds_queue");
    for cmd in &cmds {
        push.arg(cmd.to_string());
    }
    let _: i64 = push.query(&mut c.client.blocking()).expect("LPUSH");

    let ids: Vec<String> = cmds
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect();
    let done = |c: &Cluster| {
        ids.iter()
            .filter(|id| c.client.llen(&format!("cmds_queue_{id}")) > 0)
            .count()
    };
    let wait_until = |c: &Cluster, n: usize| {
        let start = Instant::now();
        while done(c) < n && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    c.controller.kill9();
    c.controller.restart();
    wait_until(&c, 200);
    c.controller.kill9();
    c.controller.restart();
    wait_until(&c, 400);
    c.agents[0].kill9();
    c.agents[0].restart();
    wait_until(&c, 600);
    c.controller.kill9();
    c.controller.restart();

    let start = Instant::now();
    while done(&c) < ids.len() {
        if start.elapsed() > Duration::from_secs(240) {
            panic!(
                "only {} of 1000 results; redis:\n{}\n{}",
                done(&c),
                redis_state(&c),
                c.dump()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Exactly one result per job (give stragglers a moment to show a second one).
    std::thread::sleep(Duration::from_secs(2));
    let mut states: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let results = c.client.results(id);
        assert_eq!(
            results.len(),
            1,
            "job {id} has {} results: {results:?}",
            results.len()
        );
        let r = &results[0];
        let state = r["state"].as_str().expect("state").to_owned();
        if state != "OK" {
            assert_eq!(
                r["data"], "agent restarted",
                "only jobs cut by the agent kill may fail: {r}"
            );
        }
        *states.entry(state).or_default() += 1;
    }
    // No process ran twice.
    let text = std::fs::read_to_string(&ran).expect("ran.log");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *seen.entry(line).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran twice: {twice:?}");
    // Only jobs running at the agent's SIGKILL end "agent restarted": at most max_jobs (16).
    assert!(
        states.get("ERROR").copied().unwrap_or(0) <= 16,
        "{states:?}"
    );
    assert!(
        seen.len() >= states["OK"],
        "every OK job ran: {} lines, {states:?}",
        seen.len()
    );
    assert_eq!(c.client.llen("cmds_queue"), 0);
    let replays: usize = (1..=4)
        .map(|i| {
            std::fs::read_to_string(c.controller.dir.path().join(format!("jsacc.{i}.log")))
                .unwrap_or_default()
                .matches("replaying")
                .count()
        })
        .sum();
    eprintln!("states: {states:?}; dead routing lists replayed: {replays}; agent log mentions restart: {}", c.agents[0].logs().matches("restarted").count());
}

#[test]
fn an_unacknowledged_command_is_delivered_again_after_its_lease() {
    let redis = tests::Redis::start();
    let opts = ControllerOpts {
        extra: vec!["--lease".into(), "1".into()],
        ..Default::default()
    };
    let controller = tests::Controller::start(&redis, opts);
    let token = redis.token_add(1, 1);
    let client = redis.client();
    let http = controller.http();
    let poll = |query: &str| -> Option<Value> {
        let url = format!("{}/v1/agents/1/1/cmd?{query}", controller.url());
        let resp = http.get(url).bearer_auth(&token).send().expect("poll");
        (resp.status() == reqwest::StatusCode::OK).then(|| resp.json().expect("JSON"))
    };
    let cmd = tests::command(1, 1, "ping", json!({}));
    let id = cmd["id"].as_str().expect("id").to_owned();
    client.push(&cmd);
    assert_eq!(poll("wait=5").expect("delivered")["id"], cmd["id"]);
    // Not acknowledged (the agent "died"): after the 1 s lease it comes again, and only then.
    assert_eq!(poll("wait=0"), None, "not redelivered within its lease");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(poll("wait=0").expect("redelivered")["id"], cmd["id"]);
    // Acknowledged: gone for good.
    assert_eq!(poll(&format!("wait=0&ack={id}")), None);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        poll("wait=0"),
        None,
        "an acknowledged command is not delivered again"
    );
    for key in ["agent:{1:1}:delivered", "agent:{1:1}:queue"] {
        assert_eq!(client.llen(key), 0, "{key}");
    }
}

#[test]
fn a_job_running_when_the_agent_is_killed_ends_agent_restarted_and_its_tree_dies() {
    let mut c = Cluster::start(&[&[]]);
    let pidfile = c.agents[0].dir.path().join("pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let cmd = execute(1, 1, "sh", &["-c", &script]);
    let id = cmd["id"].as_str().expect("id").to_owned();
    c.client.push(&cmd);
    let pid: u32 = tests::wait_for("the job's grandchild", Duration::from_secs(30), || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    c.agents[0].kill9();
    assert!(
        !gone(pid),
        "the job outlives a SIGKILLed agent until the agent comes back"
    );
    c.agents[0].restart();
    let r = c
        .client
        .result(&id, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no result\n{}", c.dump()));
    assert_eq!(
        (r["state"].as_str(), r["data"].as_str()),
        (Some("ERROR"), Some("agent restarted")),
        "{r}"
    );
    tests::wait_for("the old tree killed", Duration::from_secs(10), || {
        gone(pid).then_some(())
    });
    // Exactly one result, and the agent still works.
    assert_eq!(c.client.result(&id, Duration::from_secs(1)), None);
    let ping = c.client.run(
        &tests::command(1, 1, "ping", json!({})),
        Duration::from_secs(30),
    );
    assert_eq!(ping["state"], "OK");
}

#[test]
fn a_result_made_while_the_controller_is_down_arrives_once_when_it_is_back() {
    let mut c = Cluster::start(&[&[]]);
    let cmd = execute(1, 1, "sh", &["-c", "sleep 2; echo done"]);
    let id = cmd["id"].as_str().expect("id").to_owned();
    c.client.push(&cmd);
    tests::wait_for("job running", Duration::from_secs(30), || {
        (c.client.job_field(&id, "state")? == "RUNNING").then_some(())
    });
    c.controller.kill9();
    // The job finishes while no controller answers; the agent keeps the result in its outbox.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.client.llen(&format!("cmds_queue_{id}")), 0);
    c.controller.restart();
    let r = c
        .client
        .result(&id, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no result\n{}", c.dump()));
    assert_eq!(r["state"], "OK", "{r}");
    assert!(r["streams"][0].as_str().is_some_and(|s| s.contains("done")));
    assert_eq!(
        c.client.result(&id, Duration::from_secs(2)),
        None,
        "exactly once"
    );
}

/// Every key with a hash tag (routing, agent and instance keys), its type and size, for failures.
fn redis_state(c: &Cluster) -> String {
    let mut conn = c.client.blocking();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*[{]*")
        .query(&mut conn)
        .expect("KEYS");
    let mut state = String::new();
    for k in keys {
        let t: String = redis::cmd("TYPE").arg(&k).query(&mut conn).expect("TYPE");
        let size = match t.as_str() {
            "list" => "LLEN",
            "set" => "SCARD",
            "zset" => "ZCARD",
            "hash" => "HLEN",
            _ => "STRLEN",
        };
        let n: i64 = redis::cmd(size).arg(&k).query(&mut conn).unwrap_or(-1);
        state.push_str(&format!("{k} {t} {n}\n"));
    }
    for i in 1..=4 {
        let log = std::fs::read_to_string(c.controller.dir.path().join(format!("jsacc.{i}.log")))
            .unwrap_or_default();
        let kept: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
        state.push_str(&format!("--- jsacc start {i} ---\n{}\n", kept.join("\n")));
    }
    state
}
