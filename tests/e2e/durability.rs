//! Writes are acknowledged only once replicas hold them (`--redis-wait-replicas`), and a
//! client's retry of a push is safe: an identical re-push of a routed command is dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tests::{
    execute, free_port, wait_for, Agent, Controller, ControllerOpts, Redis, RedisCluster,
    RedisTarget,
};

/// A redis-server replica of `primary`, killed on drop.
struct Replica(Child);

impl Replica {
    fn of(primary: &Redis) -> Replica {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--replicaof", "127.0.0.1", &primary.port.to_string()])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .arg("--dbfilename")
            .arg(format!("replica-{port}.rdb"))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        Replica(child)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Redis, a controller started with `extra` flags, and agent 1:1 online.
fn stack(extra: &[&str]) -> (Redis, Controller, Agent) {
    let redis = Redis::start();
    let opts = ControllerOpts {
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..ControllerOpts::default()
    };
    let controller = Controller::start(&redis, opts);
    let agent = Agent::start(&redis, &controller, 1, 1, &[]);
    let client = redis.client();
    wait_for("agent 1:1 online", Duration::from_secs(30), || {
        client.online(1, 1).then_some(())
    });
    (redis, controller, agent)
}

#[test]
fn a_command_is_not_routed_until_a_replica_confirms_it() {
    let (redis, controller, _agent) =
        stack(&["--redis-wait-replicas", "1", "--redis-wait-ms", "200"]);
    let client = redis.client();

    let cmd = execute(1, 1, "/bin/echo", &["replicated"]);
    let id = cmd["id"].as_str().expect("id").to_owned();
    client.push(&cmd);
    // No replica: the job record is written but not confirmed, so the command stays in the
    // routing list and never reaches the agent's queue.
    assert!(
        client.result(&id, Duration::from_secs(3)).is_none(),
        "a command was routed though no replica confirmed its record"
    );
    assert_eq!(client.llen("agent:{1:1}:queue"), 0);
    assert_eq!(client.llen("agent:{1:1}:delivered"), 0);
    let routing: Vec<String> = client.query(redis::cmd("KEYS").arg("{cmds_queue}:routing:*"));
    let held: u64 = routing.iter().map(|k| client.llen(k)).sum();
    assert_eq!(held, 1, "the command is kept in its routing list");

    let _replica = Replica::of(&redis);
    let result = client
        .result(&id, Duration::from_secs(60))
        .expect("routed and answered once a replica confirms");
    assert_eq!(result["state"], "OK", "{result}");
    assert_eq!(
        client.llen(&format!("cmds_queue_{id}")),
        0,
        "one result only"
    );
    let metrics = controller
        .http()
        .get(format!("{}/metrics", controller.url()))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    let unconfirmed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jsacc_redis_writes_unconfirmed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the unconfirmed-writes counter");
    assert!(unconfirmed >= 1.0, "{metrics}");
}

#[test]
fn an_identical_push_of_a_routed_command_is_dropped_silently() {
    let (redis, _controller, _agent) = stack(&[]);
    let client = redis.client();
    let cmd = execute(1, 1, "/bin/echo", &["once"]);
    let id = cmd["id"].as_str().expect("id").to_owned();
    let first = client.run(&cmd, Duration::from_secs(30));
    assert_eq!(first["state"], "OK", "{first}");

    // The client's retry (same bytes), then a marker job: once the marker is answered, the
    // router has handled the retry.
    client.push(&cmd);
    let marker = client.run(&execute(1, 1, "/bin/true", &[]), Duration::from_secs(30));
    assert_eq!(marker["state"], "OK", "{marker}");
    assert_eq!(
        client.llen(&format!("cmds_queue_{id}")),
        0,
        "the retry was answered"
    );
    assert!(
        !client
            .dead_letters()
            .iter()
            .any(|d| d["raw"].as_str().unwrap_or("").contains(&id)),
        "the retry was dead-lettered"
    );
    // Another command under a known id is still refused.
    let mut other = execute(1, 1, "/bin/echo", &["other"]);
    other["id"] = id.clone().into();
    let answer = client.run(&other, Duration::from_secs(30));
    assert_eq!(answer["state"], "ERROR");
    assert_eq!(answer["data"], "duplicate id");
}

/// A command with a big `data` (a `put_file` chunk, a large stdin): its job record keeps the
/// command without the data (Redis would otherwise hold every chunk of an upload for the result
/// TTL), and still tells a client's retry from another command under the same id.
#[test]
fn a_big_commands_record_keeps_no_data_and_still_knows_a_retry() {
    let (redis, _controller, _agent) = stack(&[]);
    let client = redis.client();
    let stdin = "x".repeat(300_000);
    let mut cmd = execute(1, 1, "/usr/bin/wc", &["-c"]);
    cmd["data"] = stdin.clone().into();
    let id = cmd["id"].as_str().expect("id").to_owned();
    let first = client.run(&cmd, Duration::from_secs(30));
    assert_eq!(first["state"], "OK", "{first}");
    assert!(
        first["streams"][0]
            .as_str()
            .unwrap_or("")
            .contains("300000"),
        "the job got its data: {first}"
    );
    let kept = client.job_field(&id, "cmd").expect("the record's command");
    assert!(kept.len() < 1000, "the record keeps {} bytes", kept.len());
    assert_eq!(
        client.job_field(&id, "data_omitted").as_deref(),
        Some("300000")
    );

    client.push(&cmd);
    let marker = client.run(&execute(1, 1, "/bin/true", &[]), Duration::from_secs(30));
    assert_eq!(marker["state"], "OK", "{marker}");
    assert_eq!(
        client.llen(&format!("cmds_queue_{id}")),
        0,
        "the retry was answered"
    );

    let mut other = cmd.clone();
    other["data"] = "y".repeat(300_000).into();
    let answer = client.run(&other, Duration::from_secs(30));
    assert_eq!(answer["state"], "ERROR");
    assert_eq!(answer["data"], "duplicate id");
}

/// A Redis Cluster shard whose replica is down cannot confirm writes: the jobs whose records
/// live there wait (and run once the replica is back), the others are not held up by them.
#[test]
fn a_shard_without_a_replica_holds_up_only_the_jobs_written_to_it() {
    let mut redis = RedisCluster::start();
    // A shard that holds neither the routing keys nor the agent's queue.
    let busy = [
        redis.primary_of("cmds_queue"),
        redis.primary_of("agent:{1:1}:queue"),
    ];
    let lame = redis
        .primaries()
        .into_iter()
        .find(|p| !busy.contains(p))
        .expect("a third shard");
    let lame_id = redis
        .view()
        .into_iter()
        .find(|v| redis.index_of_port(v.port) == Some(lame))
        .expect("the shard's primary")
        .id;
    let replica = redis
        .view()
        .into_iter()
        .find(|v| v.master.as_deref() == Some(lame_id.as_str()))
        .and_then(|v| redis.index_of_port(v.port))
        .expect("the shard's replica");
    let controller = Controller::start(&redis, ControllerOpts::default());
    let _agent = Agent::start(&redis, &controller, 1, 1, &[]);
    let client = redis.client();
    wait_for("agent 1:1 online", Duration::from_secs(30), || {
        client.online(1, 1).then_some(())
    });
    redis.kill9(replica);

    let cmds: Vec<_> = (0..60).map(|_| execute(1, 1, "/bin/true", &[])).collect();
    let (held, free): (Vec<_>, Vec<_>) = cmds
        .iter()
        .partition(|c| redis.primary_of(&format!("job:{}", c["id"].as_str().expect("id"))) == lame);
    assert!(
        !held.is_empty() && !free.is_empty(),
        "60 ids spread over the shards"
    );
    for c in &cmds {
        client.push(c);
    }
    for c in &free {
        let id = c["id"].as_str().expect("id");
        let result = client
            .result(id, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("job {id} on a healthy shard was held up"));
        assert_eq!(result["state"], "OK", "{result}");
    }
    for c in &held {
        let id = c["id"].as_str().expect("id");
        assert_eq!(
            client.llen(&format!("cmds_queue_{id}")),
            0,
            "job {id} was answered though its record could not be confirmed"
        );
    }

    redis.restart(replica);
    for c in &held {
        let id = c["id"].as_str().expect("id");
        let result = client
            .result(id, Duration::from_secs(90))
            .unwrap_or_else(|| panic!("job {id} did not run once the replica was back"));
        assert_eq!(result["state"], "OK", "{result}");
        assert_eq!(client.llen(&format!("cmds_queue_{id}")), 0, "one result");
    }
}
