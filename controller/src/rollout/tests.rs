//! Rollouts against a real redis-server: release order, `batch_wait`, `max_failures`, kill, two
//! sweepers. The clock is the `now` handed to [`sweep`], so nothing sleeps.

use std::collections::BTreeMap;

use schemas::{JobResult, JobState};
use serde_json::json;

use super::*;
use crate::config::Config;
use crate::testkit::{self, RedisServer};

/// Agents `1:1..=n` with role `web`, live now.
async fn agents(state: &Shared, n: u64) {
    let mut conn = state.conn();
    for nid in 1..=n {
        crate::auth::add(&mut conn, 1, nid, &["web".to_owned()])
            .await
            .expect("a token");
        redis::cmd("ZADD")
            .arg(keys::AGENTS)
            .arg(schemas::now_ms())
            .arg(keys::agent_id(1, nid))
            .query_async::<()>(&mut conn)
            .await
            .expect("live");
    }
}

/// Routes a fanout of `ping` to role `web` with the rollout fields `extra`.
async fn route(state: &Shared, id: &str, extra: serde_json::Value) {
    let mut cmd = json!({"id": id, "gid": 1, "role": "web", "fanout": true, "cmd": "ping"});
    cmd.as_object_mut()
        .expect("an object")
        .extend(extra.as_object().expect("an object").clone());
    let raw = cmd.to_string().into_bytes();
    let settled = router::route_batch(state, &[(raw, false)])
        .await
        .expect("routed");
    assert!(
        matches!(settled[..], [router::Settled::Done]),
        "{settled:?}"
    );
}

/// The agents whose queue holds job `id`, in agent order.
async fn queued(state: &Shared, id: &str, n: u64) -> Vec<String> {
    let mut found = Vec::new();
    for nid in 1..=n {
        let agent = keys::agent_id(1, nid);
        let items: Vec<String> = redis::cmd("LRANGE")
            .arg(keys::agent_queue(&agent))
            .arg(0)
            .arg(-1)
            .query_async(&mut state.conn())
            .await
            .expect("a queue");
        if items.iter().any(|i| i.contains(id)) {
            found.push(agent);
        }
    }
    found
}

async fn answer(state: &Shared, id: &str, nid: u64, end: JobState) {
    let mut r = JobResult::new(id, 1, nid, "ping", json!({}), end);
    r.data = json!("pong");
    let agent = keys::agent_id(1, nid);
    assert_eq!(
        results::record(state, &agent, &r).await.expect("recorded"),
        results::Outcome::Recorded
    );
}

async fn fields(state: &Shared, id: &str) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(keys::job(id))
        .query_async(&mut state.conn())
        .await
        .expect("a record")
}

/// The results in `cmds_queue_<id>`: (agent, state, data).
async fn answers(state: &Shared, id: &str) -> Vec<(String, String, String)> {
    let results: Vec<JobResult> = crate::testkit::results_of(&mut state.conn(), id).await;
    let mut out: Vec<(String, String, String)> = results
        .into_iter()
        .map(|r| {
            let data = r.data.as_str().unwrap_or_default().to_owned();
            (
                keys::agent_id(r.gid, r.nid),
                r.state.as_str().to_owned(),
                data,
            )
        })
        .collect();
    out.sort();
    out
}

async fn setup(n: u64) -> (RedisServer, AppState) {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    agents(&state, n).await;
    (server, state)
}

#[tokio::test]
async fn batches_are_released_in_order_once_the_last_one_answered() {
    let (_server, state) = setup(5).await;
    route(&state, "r1", json!({"batch": 2})).await;
    let record = fields(&state, "r1").await;
    assert_eq!(record["targets"], r#"["1:1","1:2","1:3","1:4","1:5"]"#);
    assert_eq!(record["released"], "2");
    assert_eq!(queued(&state, "r1", 5).await, ["1:1", "1:2"]);

    let t = schemas::now_ms();
    sweep(&state, t).await.expect("swept");
    assert_eq!(
        queued(&state, "r1", 5).await,
        ["1:1", "1:2"],
        "1:2 has not answered"
    );
    answer(&state, "r1", 1, JobState::Ok).await;
    answer(&state, "r1", 2, JobState::Ok).await;
    sweep(&state, t + 1).await.expect("swept");
    assert_eq!(queued(&state, "r1", 5).await, ["1:1", "1:2", "1:3", "1:4"]);
    assert_eq!(fields(&state, "r1").await["released"], "4");
    // The record says which agents wait for their batch.
    let record = crate::jobs::record(&mut state.conn(), "r1")
        .await
        .expect("read")
        .expect("a job");
    assert_eq!(record.agents["1:5"].state.as_deref(), Some("PENDING"));
    assert_eq!(record.agents["1:3"].state, None);
    assert_eq!(record.rollout.as_ref().map(|r| r.released), Some(4));

    answer(&state, "r1", 3, JobState::Ok).await;
    answer(&state, "r1", 4, JobState::Ok).await;
    sweep(&state, t + 2).await.expect("swept");
    assert_eq!(queued(&state, "r1", 5).await.len(), 5);
    answer(&state, "r1", 5, JobState::Ok).await;
    sweep(&state, t + 3).await.expect("swept");
    assert_eq!(fields(&state, "r1").await["state"], "OK");
    let left: u64 = redis::cmd("ZCARD")
        .arg(keys::ROLLOUTS)
        .query_async(&mut state.conn())
        .await
        .expect("zcard");
    assert_eq!(left, 0, "a finished rollout is no longer swept");
}

#[tokio::test]
async fn batch_wait_counts_from_the_end_of_the_batch() {
    let (_server, state) = setup(3).await;
    route(&state, "w", json!({"batch": "34%", "batch_wait": 5})).await;
    assert_eq!(
        queued(&state, "w", 3).await,
        ["1:1", "1:2"],
        "34% of 3 rounds up"
    );
    answer(&state, "w", 1, JobState::Ok).await;
    answer(&state, "w", 2, JobState::Ok).await;
    let t = schemas::now_ms();
    sweep(&state, t).await.expect("swept");
    sweep(&state, t + 4_999).await.expect("swept");
    assert_eq!(
        queued(&state, "w", 3).await.len(),
        2,
        "released before batch_wait"
    );
    sweep(&state, t + 5_000).await.expect("swept");
    assert_eq!(queued(&state, "w", 3).await.len(), 3);
}

#[tokio::test]
async fn too_many_failures_end_the_rest_error_once_each() {
    let (_server, state) = setup(5).await;
    route(&state, "f", json!({"batch": 2, "max_failures": 1})).await;
    let t = schemas::now_ms();
    answer(&state, "f", 1, JobState::Error).await;
    answer(&state, "f", 2, JobState::Ok).await;
    sweep(&state, t).await.expect("swept");
    assert_eq!(
        queued(&state, "f", 5).await.len(),
        4,
        "one failure is tolerated"
    );
    answer(&state, "f", 3, JobState::Ok).await;
    answer(&state, "f", 4, JobState::Timeout).await;
    sweep(&state, t + 1).await.expect("swept");
    sweep(&state, t + 2)
        .await
        .expect("swept again: nothing more");
    assert_eq!(queued(&state, "f", 5).await.len(), 4, "1:5 is never sent");
    let got = answers(&state, "f").await;
    assert_eq!(got.len(), 5, "{got:?}");
    let stopped = "rollout stopped: 2 of 4 failed (max_failures 1)";
    assert_eq!(got[4], ("1:5".into(), "ERROR".into(), stopped.into()));
    let record = fields(&state, "f").await;
    assert_eq!(
        (record["state"].as_str(), record["failed"].as_str()),
        ("ERROR", "2")
    );
    assert_eq!(record["stopped"], stopped);
    let metrics = state.metrics.render(&[]);
    assert!(
        metrics.contains("\njsacc_rollouts_stopped_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_max_failures_every_batch_is_released() {
    let (_server, state) = setup(2).await;
    route(&state, "n", json!({"batch": 1})).await;
    answer(&state, "n", 1, JobState::Error).await;
    sweep(&state, schemas::now_ms()).await.expect("swept");
    assert_eq!(queued(&state, "n", 2).await.len(), 2);
}

#[tokio::test]
async fn a_kill_ends_the_targets_not_released() {
    let (_server, state) = setup(4).await;
    route(&state, "k", json!({"batch": 1})).await;
    let kills = crate::jobs::kill(&state, "k", "tester")
        .await
        .expect("killed")
        .expect("a job");
    assert_eq!(kills.len(), 1, "a kill command for the released agent only");
    assert!(
        answers(&state, "k").await.is_empty(),
        "the kill only stops the rollout: the sweeper ends its targets"
    );
    sweep(&state, schemas::now_ms()).await.expect("swept");
    let got = answers(&state, "k").await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .all(|(_, s, d)| s == "KILLED" && d == KILLED_REASON),
        "{got:?}"
    );
    assert_eq!(KILLED_REASON, "rollout killed: kill sent for the job");
    answer(&state, "k", 1, JobState::Killed).await;
    sweep(&state, schemas::now_ms()).await.expect("swept");
    assert_eq!(
        queued(&state, "k", 4).await,
        ["1:1"],
        "nothing released after a kill"
    );
    assert_eq!(fields(&state, "k").await["state"], "KILLED");
}

#[tokio::test]
async fn two_sweepers_release_a_batch_once() {
    let server = RedisServer::start();
    let a = testkit::state(&server, Config::default()).await;
    let b = testkit::state(&server, Config::default()).await;
    agents(&a, 4).await;
    route(&a, "two", json!({"batch": 2})).await;
    answer(&a, "two", 1, JobState::Ok).await;
    answer(&a, "two", 2, JobState::Ok).await;
    let t = schemas::now_ms();
    let (x, y) = tokio::join!(sweep(&a, t), sweep(&b, t));
    x.and(y).expect("swept");
    // One of them claimed the rollout; the other left it alone.
    assert_eq!(copies(&a, "1:3").await, 1, "pushed once");
    assert_eq!(copies(&a, "1:4").await, 1, "pushed once");
    assert_eq!(fields(&a, "two").await["released"], "4");
    let (x, y) = tokio::join!(sweep(&a, t + 1), sweep(&b, t + 1));
    x.and(y).expect("swept");
    assert_eq!(copies(&a, "1:4").await, 1, "pushed again after its mark");
}

#[tokio::test]
async fn a_sweeper_leaves_a_batch_another_is_pushing() {
    let server = RedisServer::start();
    let a = testkit::state(&server, Config::default()).await;
    let b = testkit::state(&server, Config::default()).await;
    agents(&a, 4).await;
    route(&a, "mid", json!({"batch": 2})).await;
    answer(&a, "mid", 1, JobState::Ok).await;
    answer(&a, "mid", 2, JobState::Ok).await;
    let t = schemas::now_ms();
    // Instance `a`, step by step: claims the rollout, decides, pushes the batch (not marked yet).
    let claimed: Vec<String> = a
        .scripts
        .rollout_claim
        .key(keys::ROLLOUTS)
        .key(keys::ROLLOUT_LEASES)
        .arg(t)
        .arg(LEASE.as_millis() as u64)
        .arg(10)
        .invoke_async(&mut a.conn())
        .await
        .expect("claimed");
    assert_eq!(claimed, ["mid"]);
    assert_eq!(
        decide(&a, "mid", t).await.expect("decided"),
        Step::Release(2, 4)
    );
    release_pushed_only(&a, "mid", 2, 4).await;
    // Meanwhile instance `b` sweeps (a result's prompt made the rollout due).
    let mut pipe = redis::pipe();
    prompt(&mut pipe, "mid");
    pipe.exec_async(&mut b.conn()).await.expect("prompted");
    sweep(&b, t).await.expect("swept");
    assert_eq!(copies(&a, "1:3").await, 1, "pushed by `a` only");
    assert_eq!(copies(&a, "1:4").await, 1, "pushed by `a` only");
}

#[tokio::test]
async fn a_claimed_rollout_is_left_to_its_holder_until_the_lease_ends() {
    let server = RedisServer::start();
    let a = testkit::state(&server, Config::default()).await;
    let b = testkit::state(&server, Config::default()).await;
    agents(&a, 2).await;
    route(&a, "held", json!({"batch": 1})).await;
    answer(&a, "held", 1, JobState::Ok).await;
    let t = schemas::now_ms();
    // Instance `a` claims it and dies before its step.
    let claimed: Vec<String> = a
        .scripts
        .rollout_claim
        .key(keys::ROLLOUTS)
        .key(keys::ROLLOUT_LEASES)
        .arg(t)
        .arg(LEASE.as_millis() as u64)
        .arg(10)
        .invoke_async(&mut a.conn())
        .await
        .expect("claimed");
    assert_eq!(claimed, ["held"]);
    // A result's prompt makes it due again, but the lease holds.
    let mut pipe = redis::pipe();
    prompt(&mut pipe, "held");
    pipe.exec_async(&mut b.conn()).await.expect("prompted");
    sweep(&b, t + 1).await.expect("swept");
    assert_eq!(copies(&b, "1:2").await, 0, "the lease holds");
    sweep(&b, t + LEASE.as_millis() as u64 + 1)
        .await
        .expect("swept");
    assert_eq!(
        copies(&b, "1:2").await,
        1,
        "taken over once the lease ended"
    );
}

#[tokio::test]
async fn a_batch_is_marked_released_once() {
    let (_server, state) = setup(6).await;
    route(&state, "m", json!({"batch": 2})).await;
    let mark = || async {
        state
            .scripts
            .rollout_mark
            .key(keys::job("m"))
            .arg(2)
            .arg(4)
            .invoke_async::<i64>(&mut state.conn())
            .await
            .expect("marked")
    };
    assert_eq!((mark().await, mark().await), (1, 0));
    kill(&state, "m").await.expect("killed");
    let again = state
        .scripts
        .rollout_mark
        .key(keys::job("m"))
        .arg(4)
        .arg(6)
        .invoke_async::<i64>(&mut state.conn())
        .await
        .expect("marked");
    assert_eq!(again, -1, "a stopped rollout releases nothing more");
}

async fn copies(state: &Shared, agent: &str) -> usize {
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::agent_queue(agent))
        .arg(0)
        .arg(-1)
        .query_async(&mut state.conn())
        .await
        .expect("a queue");
    items.len()
}

#[tokio::test]
async fn a_push_whose_mark_was_lost_is_pushed_again_and_marked() {
    let (_server, state) = setup(3).await;
    route(&state, "c", json!({"batch": 1})).await;
    answer(&state, "c", 1, JobState::Ok).await;
    let t = schemas::now_ms();
    // A sweeper that pushed the second batch and died before its mark.
    release_pushed_only(&state, "c", 1, 2).await;
    sweep(&state, t).await.expect("swept");
    assert_eq!(fields(&state, "c").await["released"], "2");
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::agent_queue("1:2"))
        .arg(0)
        .arg(-1)
        .query_async(&mut state.conn())
        .await
        .expect("a queue");
    assert_eq!(
        items.len(),
        2,
        "pushed twice: the agent drops the second copy by its id"
    );
    assert_eq!(queued(&state, "c", 1).await.len(), 1);
}

/// The push of [`release`] without its mark (a crash between the two).
async fn release_pushed_only(state: &Shared, id: &str, from: usize, to: usize) {
    let (raw, targets) = command_of(state, id).await.expect("read").expect("a job");
    for agent in &targets[from..to] {
        redis::cmd("LPUSH")
            .arg(keys::agent_queue(agent))
            .arg(&raw)
            .query_async::<()>(&mut state.conn())
            .await
            .expect("pushed");
    }
}

#[tokio::test]
async fn a_replayed_route_pushes_only_the_released_batches() {
    let (_server, state) = setup(3).await;
    let raw =
        json!({"id": "p", "gid": 1, "role": "web", "fanout": true, "cmd": "ping", "batch": 1})
            .to_string()
            .into_bytes();
    router::route_batch(&state, &[(raw.clone(), false)])
        .await
        .expect("routed");
    router::route_batch(&state, &[(raw, true)])
        .await
        .expect("replayed");
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::agent_queue("1:2"))
        .arg(0)
        .arg(-1)
        .query_async(&mut state.conn())
        .await
        .expect("a queue");
    assert!(items.is_empty(), "1:2 is not released: {items:?}");
}

#[tokio::test]
async fn a_kill_command_sent_to_one_agent_stops_the_rollout() {
    let (_server, state) = setup(3).await;
    route(&state, "kc", json!({"batch": 1})).await;
    let kill = json!({"id": "kill-kc", "gid": 1, "nid": 1, "cmd": "kill", "args": {"id": "kc"}});
    router::route_batch(&state, &[(kill.to_string().into_bytes(), false)])
        .await
        .expect("routed");
    sweep(&state, schemas::now_ms()).await.expect("swept");
    let got = answers(&state, "kc").await;
    let stopped: Vec<&str> = got.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(stopped, ["1:2", "1:3"], "{got:?}");
    assert!(got.iter().all(|(_, s, _)| s == "KILLED"), "{got:?}");
    answer(&state, "kc", 1, JobState::Killed).await;
    sweep(&state, schemas::now_ms()).await.expect("swept");
    assert_eq!(queued(&state, "kc", 3).await, ["1:1"]);
}

#[tokio::test]
async fn a_kill_racing_a_release_kills_the_batch_there() {
    let (_server, state) = setup(3).await;
    route(&state, "race", json!({"batch": 1})).await;
    answer(&state, "race", 1, JobState::Ok).await;
    let t = schemas::now_ms();
    // A sweeper decides and pushes the second batch, then dies before its mark; a kill comes.
    assert_eq!(
        decide(&state, "race", t).await.expect("decided"),
        Step::Release(1, 2)
    );
    release_pushed_only(&state, "race", 1, 2).await;
    assert!(kill(&state, "race").await.expect("killed"));
    sweep(&state, t).await.expect("swept");
    sweep(&state, t + 1).await.expect("swept");
    let got = answers(&state, "race").await;
    let ended: Vec<(&str, &str)> = got
        .iter()
        .map(|(a, s, _)| (a.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        ended,
        [("1:1", "OK"), ("1:2", "KILLED"), ("1:3", "KILLED")],
        "{got:?}"
    );
    // 1:2 was answered KILLED but may get the job: it is killed there.
    let submitted: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::CMDS_QUEUE)
        .arg(0)
        .arg(-1)
        .query_async(&mut state.conn())
        .await
        .expect("the queue");
    let kills: Vec<(u64, String)> = submitted
        .iter()
        .map(|c| serde_json::from_str::<serde_json::Value>(c).expect("json"))
        .filter(|c| c["cmd"] == "kill")
        .map(|c| {
            (
                c["nid"].as_u64().unwrap_or(0),
                c["args"]["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(kills, [(2, "race".to_owned())]);
    assert!(!fields(&state, "race").await.contains_key("releasing"));
    assert_eq!(fields(&state, "race").await["released"], "1");
}

#[tokio::test]
async fn each_step_renews_the_record_and_the_results() {
    let server = RedisServer::start();
    let config = Config {
        result_ttl: std::time::Duration::from_secs(500),
        ..Config::default()
    };
    let state = testkit::state(&server, config).await;
    agents(&state, 2).await;
    route(&state, "slow", json!({"batch": 1, "batch_wait": 400})).await;
    answer(&state, "slow", 1, JobState::Ok).await;
    let mut conn = state.conn();
    let mut keys_of_job = vec![keys::job("slow"), keys::results("slow")];
    keys_of_job.extend(keys::appended("slow"));
    for key in &keys_of_job {
        redis::cmd("EXPIRE")
            .arg(key)
            .arg(5)
            .query_async::<()>(&mut conn)
            .await
            .expect("expire");
    }
    sweep(&state, schemas::now_ms()).await.expect("swept");
    for key in &keys_of_job {
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!(ttl > 400, "{key}: {ttl}");
    }
}

#[tokio::test]
async fn a_rollout_whose_waits_outlast_the_result_ttl_is_refused() {
    let server = RedisServer::start();
    let config = Config {
        result_ttl: std::time::Duration::from_secs(10),
        ..Config::default()
    };
    let state = testkit::state(&server, config).await;
    agents(&state, 3).await;
    // Two waits of 5 s: 10 s, within the TTL.
    route(&state, "ok", json!({"batch": 1, "batch_wait": 5})).await;
    assert_eq!(fields(&state, "ok").await["released"], "1");
    // Two waits of 6 s: 12 s, over it.
    route(&state, "long", json!({"batch": 1, "batch_wait": 6})).await;
    let got = answers(&state, "long").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, "ERROR");
    assert!(
        got[0].2.starts_with("batch_wait: ") && got[0].2.contains("result TTL"),
        "{got:?}"
    );
    let record = fields(&state, "long").await;
    assert!(!record.contains_key("rollout"), "{record:?}");
    assert!(queued(&state, "long", 3).await.is_empty());
}
