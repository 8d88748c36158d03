//! The stack on real Redis topologies (DESIGN §10–§11): a Redis Cluster of 3 primaries and 3
//! replicas, and a Sentinel set of 1 primary, 2 replicas and 3 sentinels. The harness is checked
//! on its own (the primary holding `cmds_queue` is SIGKILLed and a replica takes over), then a
//! whole stack runs every kind of command on each, loses that primary while 1,000 jobs flow, and
//! loses one of three controllers while 500 jobs flow: every job gets exactly one result and none
//! runs twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::client::transient;
use tests::{
    command, execute, wait_for, Agent, Cluster, Controller, ControllerOpts, Failover, RedisCluster,
    RedisTarget, SentinelSet,
};

const T: Duration = Duration::from_secs(60);
/// How long all the jobs of a fault test may take to finish.
const ALL_DONE: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// The harness on its own (no jsacc).

/// Pushes a marker acknowledged by a replica, kills the primary holding `cmds_queue`, waits for
/// the failover, and finds the marker through the topology's client; the old primary rejoins.
fn harness_fails_over(mut redis: impl Failover) {
    let client = redis.client();
    let acked = client
        .try_push_acked("marker", 1, Duration::from_secs(5))
        .expect("LPUSH + WAIT");
    assert!(acked >= 1, "a replica has the marker");
    let old = redis.kill9_queue_primary();
    let new = redis.wait_failover(old);
    assert_ne!(new, old);
    // The client follows the new primary (retrying across the failover).
    let items: Vec<String> = client.query(redis::cmd("LRANGE").arg("cmds_queue").arg(0).arg(-1));
    assert_eq!(items, ["marker"]);
    client.push_raw("after");
    assert_eq!(client.llen("cmds_queue"), 2);
    redis.restart(old);
    redis.wait_healthy();
    assert_eq!(client.llen("cmds_queue"), 2);
    assert!(redis.pids().len() >= 6, "every process is running again");
}

#[test]
fn topology_harness_cluster_fails_over_the_primary_of_cmds_queue() {
    let rc = RedisCluster::start();
    assert_eq!(rc.primaries().len(), 3);
    let slot = rc.slot("cmds_queue");
    let primary = rc.primary_of("cmds_queue");
    let view = rc.view();
    let owner = view
        .iter()
        .find(|n| n.port == rc.ports()[primary])
        .expect("in the view");
    assert!(owner.is_primary() && owner.serves(slot), "{owner:?}");
    // Keys of one hash tag share a slot, so a routing move is legal.
    assert_eq!(rc.slot("{cmds_queue}:routing:x"), slot);
    harness_fails_over(rc);
}

#[test]
fn topology_harness_sentinel_fails_over_the_primary() {
    let set = SentinelSet::start();
    assert_eq!(set.primary(), 0);
    harness_fails_over(set);
}

// ---------------------------------------------------------------------------------------------
// Every kind of command on a topology.

/// A stack on `redis`: one controller, agents 1:1 and 1:2 (role `web`), stats flushed every second.
fn stack<R: RedisTarget>(redis: R) -> Cluster<R> {
    Cluster::start_on(
        redis,
        &[&["web"], &["web"]],
        ControllerOpts::default(),
        "stats_flush_interval = 1\n",
    )
}

fn shell(nid: u64, script: &str, domain: &str, name: &str) -> Value {
    let mut cmd = execute(1, nid, "/bin/sh", &["-c", script]);
    cmd["args"]["domain"] = json!(domain);
    cmd["args"]["name"] = json!(name);
    cmd
}

fn id_of(cmd: &Value) -> String {
    cmd["id"].as_str().expect("id").to_owned()
}

/// The controller's and agents' logs, for failure messages.
fn dump<R: RedisTarget>(c: &Cluster<R>, more: &[&Controller]) -> String {
    let mut out = c.dump();
    for ctl in std::iter::once(&c.controller).chain(more.iter().copied()) {
        let logs = ctl.logs();
        let kept: Vec<&str> = logs.lines().filter(|l| !l.contains("DEBUG")).collect();
        out.push_str(&format!(
            "--- jsacc :{} ---\n{}\n",
            ctl.port,
            kept.join("\n")
        ));
    }
    out
}

fn every_command_type<R: RedisTarget>(c: &Cluster<R>) {
    let topology = c.redis.topology();
    // Events: subscribed before anything is pushed.
    let mut sub = c.client.blocking();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("jsacc:events").expect("subscribe");
    pubsub
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");

    // ping, with its events.
    let ping = command(1, 1, "ping", json!({}));
    let r = c.client.run(&ping, T);
    assert_eq!(
        (r["state"].as_str(), r["data"].as_str()),
        (Some("OK"), Some("pong")),
        "{topology}: {r}"
    );
    let mut states = vec![];
    while states.last().map(String::as_str) != Some("OK") {
        let msg = pubsub
            .get_message()
            .unwrap_or_else(|e| panic!("{topology}: no event ({e}); seen {states:?}"));
        let event: Value =
            serde_json::from_str(&msg.get_payload::<String>().expect("text")).expect("JSON");
        if event["id"] == ping["id"] {
            states.push(event["state"].as_str().expect("state").to_owned());
        }
    }
    assert_eq!(states, ["QUEUED", "RUNNING", "OK"], "{topology}");
    drop(pubsub);

    // execute.
    let r = c
        .client
        .run(&execute(1, 2, "/bin/echo", &["hello", topology]), T);
    assert_eq!(r["state"], "OK", "{topology}: {r}");
    assert_eq!(
        r["streams"][0],
        json!(format!("hello {topology}\n")),
        "{topology}"
    );
    assert_eq!(
        c.client
            .job_field(r["id"].as_str().expect("id"), "state")
            .as_deref(),
        Some("OK")
    );

    // An internal command.
    let r = c.client.run(&command(1, 1, "get_os_info", json!({})), T);
    assert_eq!(r["state"], "OK", "{topology}: {r}");
    assert!(
        !r["data"].is_null() && r["data"] != json!(""),
        "{topology}: {r}"
    );

    // role fanout: one result per `web` agent.
    let mut fan = command(1, 0, "ping", json!({}));
    fan.as_object_mut().expect("object").remove("nid");
    fan["role"] = json!("web");
    fan["fanout"] = json!(true);
    let fan_id = id_of(&fan);
    c.client.push(&fan);
    let mut nids: Vec<u64> = (0..2)
        .map(|_| {
            let r = c
                .client
                .result(&fan_id, T)
                .unwrap_or_else(|| panic!("{topology}: a fanout result\n{}", dump(c, &[])));
            assert_eq!(r["state"], "OK", "{r}");
            r["nid"].as_u64().expect("nid")
        })
        .collect();
    nids.sort_unstable();
    assert_eq!(nids, [1, 2], "{topology}");
    assert_eq!(c.client.result(&fan_id, Duration::from_secs(1)), None);

    // kill of a running job.
    let sleeper = execute(1, 1, "sleep", &["300"]);
    let sleeper_id = id_of(&sleeper);
    c.client.push(&sleeper);
    wait_for("the sleeper RUNNING", T, || {
        (c.client.job_field(&sleeper_id, "state")? == "RUNNING").then_some(())
    });
    let kill = c
        .client
        .run(&command(1, 1, "kill", json!({ "id": sleeper_id })), T);
    assert_eq!(kill["state"], "OK", "{topology}: {kill}");
    let r = c
        .client
        .result(&sleeper_id, T)
        .expect("the sleeper's result");
    assert_eq!(r["state"], "KILLED", "{topology}: {r}");

    // Logs forwarded to log.<domain>.<name>.
    let mut logger = shell(1, "echo 5::hello", "topo", "logger");
    logger["args"]["loglevels_ac"] = json!("5");
    let r = c.client.run(&logger, T);
    assert_eq!(r["state"], "OK", "{topology}: {r}");
    let logged = wait_for("the forwarded log line", T, || {
        let s = c.client.stream("log.topo.logger");
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(logged.len(), 1, "{topology}: {logged:?}");
    assert_eq!(
        (
            logged[0]["data"].as_str(),
            logged[0]["level"].as_str(),
            logged[0]["nid"].as_str()
        ),
        ("hello", "5", "1"),
        "{topology}"
    );
    assert_eq!(logged[0]["jobid"], id_of(&logger));

    // Stats: a batch in stats:{1:1}, the latest value in stats:{1:1}:latest.
    let r = c
        .client
        .run(&shell(1, "echo '10::m:1|c'", "topo", "stats"), T);
    assert_eq!(r["state"], "OK", "{topology}: {r}");
    let m = wait_for("topo.stats.m in stats:{1:1}:latest", T, || {
        c.client.hget_json("stats:{1:1}:latest", "topo.stats.m")
    });
    assert_eq!(m["type"], "counter", "{topology}: {m}");
    let batches: Vec<schemas::StatsBatch> = c
        .client
        .stream("stats:{1:1}")
        .iter()
        .map(|f| serde_json::from_str(&f["batch"]).expect("a stats batch"))
        .collect();
    assert!(
        batches
            .iter()
            .any(|b| b.metrics.iter().any(|m| m.key == "topo.stats.m")),
        "{topology}: a batch carries the metric"
    );
}

#[test]
fn topology_cluster_runs_every_command_type() {
    let c = stack(RedisCluster::start());
    every_command_type(&c);
}

#[test]
fn topology_sentinel_runs_every_command_type() {
    let c = stack(SentinelSet::start());
    every_command_type(&c);
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// `n` commands, alternating agents 1:1 and 1:2, each appending its id to `ran` once it runs.
fn appending_jobs(n: usize, ran: &Path) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let id = format!("j{i}-{}", uuid::Uuid::new_v4());
            let script = format!("echo {id} >> {}", ran.display());
            let mut cmd = execute(1, 1 + (i % 2) as u64, "/bin/sh", &["-c", &script]);
            cmd["id"] = json!(id);
            cmd
        })
        .collect()
}

/// Pushes `cmds` from a thread, one every `pace`, through a client of `url`: each push is
/// `LPUSH` + `WAIT 1 1000` on the primary holding `cmds_queue`, repeated (an identical re-push)
/// when it errored or no replica acknowledged it. `pushed` counts the pushes done.
/// `n` appending jobs pushed every 20 ms by a [`pusher`] thread, and the file they append to.
struct Load {
    _dir: tempfile::TempDir,
    ran: std::path::PathBuf,
    cmds: Vec<Value>,
    pushed: Arc<AtomicUsize>,
    push: std::thread::JoinHandle<(usize, usize)>,
}

impl Load {
    fn start(url: String, n: usize) -> Load {
        let dir = tempfile::tempdir().expect("tempdir");
        let ran = dir.path().join("ran.log");
        let cmds = appending_jobs(n, &ran);
        let pushed = Arc::new(AtomicUsize::new(0));
        let push = pusher(
            url,
            cmds.iter().map(Value::to_string).collect(),
            Duration::from_millis(20),
            pushed.clone(),
        );
        Load {
            _dir: dir,
            ran,
            cmds,
            pushed,
            push,
        }
    }

    /// Waits until `n` jobs were pushed.
    fn wait_pushed(&self, n: usize) {
        wait_for(&format!("{n} jobs pushed"), T, || {
            (self.pushed.load(Ordering::SeqCst) >= n).then_some(())
        });
    }

    fn pushed(&self) -> usize {
        self.pushed.load(Ordering::SeqCst)
    }
}

fn pusher(
    url: String,
    cmds: Vec<String>,
    pace: Duration,
    pushed: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let client = tests::RedisClient::new(&url);
        let (mut errors, mut unacked) = (0, 0);
        for raw in &cmds {
            let start = Instant::now();
            loop {
                match client.try_push_acked(raw, 1, Duration::from_secs(1)) {
                    Ok(n) if n >= 1 => break,
                    Ok(_) => unacked += 1,
                    Err(e) if transient(&e) => {
                        errors += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => panic!("push: {e}"),
                }
                assert!(
                    start.elapsed() < Duration::from_secs(90),
                    "a push did not go through within 90 s"
                );
            }
            pushed.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(pace);
        }
        (errors, unacked)
    })
}

/// Waits until every job has a result, then checks: exactly one result each, `OK`, `job:<id>`
/// `OK`, and each ran exactly once (one line in `ran`).
fn check_exactly_once<R: RedisTarget>(
    c: &Cluster<R>,
    cmds: &[Value],
    ran: &Path,
    more: &[&Controller],
    redis_logs: impl Fn() -> String,
) {
    let topology = c.redis.topology();
    let ids: Vec<String> = cmds.iter().map(id_of).collect();
    let start = Instant::now();
    let mut missing: Vec<&String> = ids.iter().collect();
    while !missing.is_empty() {
        missing.retain(|id| c.client.llen(&format!("cmds_queue_{id}")) == 0);
        if missing.is_empty() {
            break;
        }
        if start.elapsed() > ALL_DONE {
            let sample: Vec<String> = missing
                .iter()
                .take(5)
                .map(|id| format!("{id}: job state {:?}", c.client.job_field(id, "state")))
                .collect();
            panic!(
                "{topology}: {} of {} jobs without a result after {ALL_DONE:?}; e.g. {sample:?}; \
                 cmds_queue holds {}\n{}\n{}",
                missing.len(),
                ids.len(),
                c.client.llen("cmds_queue"),
                dump(c, more),
                redis_logs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // A straggling second result would show by now.
    std::thread::sleep(Duration::from_secs(2));
    let text = std::fs::read_to_string(ran).unwrap_or_default();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *runs.entry(line.trim()).or_default() += 1;
    }
    let mut problems = vec![];
    for id in &ids {
        let results = c.client.results(id);
        if results.len() != 1 || results[0]["state"] != "OK" {
            problems.push(format!("{id}: {} results {results:?}", results.len()));
        }
        let state = c.client.job_field(id, "state");
        if state.as_deref() != Some("OK") {
            problems.push(format!("{id}: job:<id> state {state:?}"));
        }
        let n = runs.get(id.as_str()).copied().unwrap_or(0);
        if n != 1 {
            problems.push(format!("{id}: ran {n} times"));
        }
    }
    assert!(
        problems.is_empty(),
        "{topology}: {} problems, first: {:#?}\n{}",
        problems.len(),
        &problems[..problems.len().min(10)],
        dump(c, more)
    );
}

/// One controller, two agents; 1,000 jobs pushed at a steady pace; after 200, the primary
/// holding `cmds_queue` is SIGKILLed; it comes back as a replica once a replica took over.
fn survives_losing_the_queue_primary<R: Failover>(redis: R) {
    let mut c = Cluster::start_on(redis, &[&[], &[]], ControllerOpts::default(), "");
    let topology = c.redis.topology();
    let load = Load::start(c.redis.url(), 1000);
    load.wait_pushed(200);
    let old = c.redis.kill9_queue_primary();
    let killed_at = Instant::now();
    let new = c.redis.wait_failover(old);
    eprintln!(
        "{topology}: node {old} killed after {} pushes; node {new} took over in {:?}",
        load.pushed(),
        killed_at.elapsed()
    );
    c.redis.restart(old);
    let (errors, unacked) = load.push.join().expect("pusher");
    eprintln!("{topology}: pushes that errored {errors}, not acknowledged by a replica {unacked}");
    check_exactly_once(&c, &load.cmds, &load.ran, &[], || c.redis.logs());
}

#[test]
fn topology_cluster_loses_the_primary_of_cmds_queue_and_no_job_is_lost_or_run_twice() {
    survives_losing_the_queue_primary(RedisCluster::start());
}

#[test]
fn topology_sentinel_loses_the_primary_and_no_job_is_lost_or_run_twice() {
    survives_losing_the_queue_primary(SentinelSet::start());
}

/// Three controllers on one Redis; agent 1:1 polls the first, 1:2 the second, the third only
/// routes. 500 jobs are pushed at a steady pace; after 250 the third is frozen (SIGSTOP), and
/// after 300 SIGKILLed: the others replay its routing list, and every job still runs exactly once.
fn survives_losing_one_of_three_controllers<R: RedisTarget>(redis: R) {
    let mut c = Cluster::start_on(redis, &[&[]], ControllerOpts::default(), "");
    let second = Controller::start(&c.redis, ControllerOpts::default());
    let mut third = Controller::start(&c.redis, ControllerOpts::default());
    c.agents.push(Agent::start(&c.redis, &second, 1, 2, &[]));
    c.wait_online(1, 2);
    let load = Load::start(c.redis.url(), 500);
    load.wait_pushed(250);
    // Frozen first, so its blocked BLMOVE still takes commands it will never route: they wait in
    // its routing list until another controller replays it.
    let pid = nix::unistd::Pid::from_raw(third.proc().pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    load.wait_pushed(300);
    third.kill9();
    load.push.join().expect("pusher");
    check_exactly_once(&c, &load.cmds, &load.ran, &[&second, &third], String::new);
    let replays: usize = [&c.controller, &second]
        .iter()
        .map(|ctl| ctl.logs().matches("replaying").count())
        .sum();
    eprintln!(
        "{}: routing lists of dead controllers replayed: {replays}",
        c.redis.topology()
    );
}

#[test]
fn topology_cluster_loses_one_of_three_controllers_and_no_job_is_lost_or_run_twice() {
    survives_losing_one_of_three_controllers(RedisCluster::start());
}

#[test]
fn topology_sentinel_loses_one_of_three_controllers_and_no_job_is_lost_or_run_twice() {
    survives_losing_one_of_three_controllers(SentinelSet::start());
}
