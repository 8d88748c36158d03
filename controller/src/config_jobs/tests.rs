use std::collections::BTreeMap;

use schemas::JobState;

use super::*;
use crate::config::Config;
use crate::results::{self, Outcome};
use crate::testkit::{self, RedisServer};

#[test]
fn the_owner_is_the_agent_the_id_names() {
    assert_eq!(owner("cfg:1:5:backup").as_deref(), Some("1:5"));
    assert_eq!(owner("cfg:1:5:a:b").as_deref(), Some("1:5"));
    for not in [
        "6f1c",
        "cfg:1:5:",
        "cfg:1:backup",
        "cfg:x:5:b",
        "cfg:-1:5:b",
        "cfg:",
    ] {
        assert_eq!(owner(not), None, "{not}");
    }
    assert!(is_reserved("cfg:x") && !is_reserved("cf"));
}

/// A result of config job `id` from agent 1:5, run `run`.
fn result(id: &str, run: u64, is_final: bool, state: JobState) -> JobResult {
    let args = json!({"cmd": "echo", "recurring_period": 1, "domain": "ops", "name": "tick"});
    let mut r = JobResult::new(id, 1, 5, "execute", args, state);
    (r.run, r.is_final) = (run, is_final);
    r
}

async fn fields(conn: &mut Conn, id: &str) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(keys::job(id))
        .query_async(conn)
        .await
        .expect("HGETALL")
}

async fn in_history(conn: &mut Conn, key: &str, id: &str) -> bool {
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(key)
        .arg(id)
        .query_async(conn)
        .await
        .expect("ZSCORE");
    score.is_some()
}

#[tokio::test]
async fn a_first_result_creates_the_record_in_the_histories() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let id = "cfg:1:5:tick";
    let outcome = results::record(&state, "1:5", &result(id, 1, false, JobState::Ok)).await;
    assert_eq!(outcome.expect("recorded"), Outcome::Recorded);
    let mut conn = state.conn();
    let f = fields(&mut conn, id).await;
    assert_eq!(f["state"], "RUNNING");
    assert_eq!(f["targets"], "[\"1:5\"]");
    assert_eq!(
        (f["submitted_by"].as_str(), f["recurring"].as_str()),
        ("config", "1")
    );
    let cmd: Value = serde_json::from_str(&f["cmd"]).expect("cmd JSON");
    assert_eq!(
        (cmd["id"].as_str(), cmd["args"]["cmd"].as_str()),
        (Some(id), Some("echo"))
    );
    for key in [
        keys::JOBS_ALL.to_owned(),
        keys::jobs_of_agent("1:5"),
        keys::jobs_named("ops", "tick"),
    ] {
        assert!(in_history(&mut conn, &key, id).await, "{key}");
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg(keys::job(id))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(ttl > 0, "{ttl}");
    let listed: i64 = redis::cmd("LLEN")
        .arg(keys::results(id))
        .query_async(&mut conn)
        .await
        .expect("LLEN");
    assert_eq!(listed, 1);
}

#[tokio::test]
async fn no_agent_opens_or_writes_another_agents_config_job() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    for id in ["cfg:1:5:x", "cfg:1:x", "cfg:"] {
        let mut r = result(id, 1, false, JobState::Ok);
        (r.gid, r.nid) = (1, 6);
        let outcome = results::record(&state, "1:6", &r).await.expect("answered");
        assert_eq!(outcome, Outcome::NotATarget, "{id}");
        assert!(fields(&mut state.conn(), id).await.is_empty(), "{id}");
    }
}

#[tokio::test]
async fn a_later_run_after_a_final_result_reopens_the_record() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let id = "cfg:1:5:tick";
    let post = |r: JobResult| {
        let state = state.clone();
        async move { results::record(&state, "1:5", &r).await.expect("answered") }
    };
    assert_eq!(
        post(result(id, 1, false, JobState::Ok)).await,
        Outcome::Recorded
    );
    // Killed: the agent's part ends. Posted again (a lost answer): a duplicate.
    assert_eq!(
        post(result(id, 1, true, JobState::Killed)).await,
        Outcome::Recorded
    );
    assert_eq!(
        post(result(id, 1, true, JobState::Killed)).await,
        Outcome::Duplicate
    );
    assert_eq!(fields(&mut state.conn(), id).await["state"], "KILLED");
    // The agent started it again (its next start), with its runs numbered on.
    assert_eq!(
        post(result(id, 2, false, JobState::Ok)).await,
        Outcome::Recorded
    );
    let f = fields(&mut state.conn(), id).await;
    assert_eq!(f["state"], "RUNNING");
    assert!(
        !f.contains_key("ended") && !f.contains_key("result:1:5"),
        "{f:?}"
    );
    // Its second end is recorded and listed as well.
    assert_eq!(
        post(result(id, 2, true, JobState::Killed)).await,
        Outcome::Recorded
    );
    assert_eq!(fields(&mut state.conn(), id).await["state"], "KILLED");
    let listed: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::results(id))
        .arg(0)
        .arg(-1)
        .query_async(&mut state.conn())
        .await
        .expect("LRANGE");
    assert_eq!(listed.len(), 4, "{listed:?}");
}

#[tokio::test]
async fn a_hello_declares_its_config_jobs_and_a_later_start_reopens_them() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let id = "cfg:1:5:web";
    let ids = vec![id.to_owned(), "cfg:1:6:other".to_owned(), "6f1c".to_owned()];
    let warnings = declare(&state, "1:5", 1000, &ids).await.expect("declared");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(fields(&mut state.conn(), "cfg:1:6:other").await.is_empty());
    let mut conn = state.conn();
    let f = fields(&mut conn, id).await;
    assert_eq!(
        (f["state"].as_str(), f["targets"].as_str()),
        ("RUNNING", "[\"1:5\"]")
    );
    assert_eq!(f["submitted_by"], "config");
    assert!(in_history(&mut conn, keys::JOBS_ALL, id).await);
    assert!(in_history(&mut conn, &keys::jobs_of_agent("1:5"), id).await);

    // Its first result tells the rest of its command, and its name's history has it.
    let outcome = results::record(&state, "1:5", &result(id, 1, true, JobState::Killed)).await;
    assert_eq!(outcome.expect("recorded"), Outcome::Recorded);
    let cmd: Value = serde_json::from_str(&fields(&mut conn, id).await["cmd"]).expect("JSON");
    assert_eq!(cmd["args"]["cmd"], "echo");
    assert!(in_history(&mut conn, &keys::jobs_named("ops", "tick"), id).await);

    // The same start's hello again (a reconnect) leaves the kill; a new start reopens it.
    declare(&state, "1:5", 1000, &ids[..1])
        .await
        .expect("declared");
    assert_eq!(fields(&mut conn, id).await["state"], "KILLED");
    declare(&state, "1:5", 2000, &ids[..1])
        .await
        .expect("declared");
    let f = fields(&mut conn, id).await;
    assert_eq!(f["state"], "RUNNING");
    assert!(!f.contains_key("result:1:5"), "{f:?}");
}

#[tokio::test]
async fn an_agent_prints_live_output_of_its_own_config_job_before_its_record_exists() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let line = json!({"fd": 1, "level": 1, "line": "up", "time": 1});
    let body = json!([
        {"id": "cfg:1:5:web", "seq": 1, "lines": [line]},
        {"id": "cfg:1:6:web", "seq": 2, "lines": [line]},
    ])
    .to_string();
    let (batches, mut answer) = crate::output::parse_batch(body.as_bytes()).expect("valid");
    crate::output::append(&state, "1:5", batches, &mut answer)
        .await
        .expect("appended");
    assert_eq!(answer.appended, 1, "{answer:?}");
    assert_eq!(answer.rejected.len(), 1, "{answer:?}");
    assert_eq!(answer.rejected[0].id, "cfg:1:6:web");
}
