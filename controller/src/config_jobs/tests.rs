use std::collections::BTreeMap;

use schemas::JobState;

use super::*;
use crate::config::Config;
use crate::results::{self, Outcome};
use crate::testkit::{self, RedisServer};

#[test]
fn the_owner_is_the_agent_the_id_names() {
    assert_eq!(owner("cfg:1:5:backup").as_deref(), Some("1:5"));
    for not in [
        "6f1c",
        "cfg:1:5:a:b",
        "cfg:+1:5:x",
        "cfg:01:5:x",
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

async fn exists(conn: &mut Conn, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(conn)
        .await
        .expect("EXISTS");
    n == 1
}

async fn listed(conn: &mut Conn, id: &str) -> Vec<JobResult> {
    crate::testkit::results_of(conn, id).await
}

/// Regression: an agent token grew Redis without bound through `cfg:` ids that were not in their
/// canonical form (a sign, leading zeros, braces, any length), and through `args.domain` and
/// `args.name` of any size (history keys `jobs:name:<d>/<n>`). Each is refused, nothing written.
#[tokio::test]
async fn an_agents_bad_config_job_results_are_refused_and_write_nothing() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let mut conn = state.conn();
    let long_name = format!("cfg:1:5:{}", "n".repeat(10_000));
    for id in [
        "cfg:+1:5:x",
        "cfg:01:5:x",
        "cfg:1:05:x",
        "cfg:1:5:a{b}",
        "cfg:1:5:a:b",
        long_name.as_str(),
    ] {
        let outcome = results::record(&state, "1:5", &result(id, 1, false, JobState::Ok)).await;
        assert_eq!(outcome.expect("answered"), Outcome::NotATarget, "{id}");
        assert!(!exists(&mut conn, &keys::job(id)).await, "{id}");
        assert!(!exists(&mut conn, &keys::results(id)).await, "{id}");
    }
    let id = "cfg:1:5:tick";
    let long = "d".repeat(schemas::config_job::MAX_KEY_PART + 1);
    let refusals: Vec<(&str, Value)> = vec![
        (
            "execute",
            json!({"cmd": "x", "recurring_period": 1, "domain": long, "name": "n"}),
        ),
        (
            "execute",
            json!({"cmd": "x", "recurring_period": 1, "domain": "o", "name": long}),
        ),
        (
            "execute",
            json!({"cmd": "x", "recurring_period": 1, "domain": "o{", "name": "n"}),
        ),
        (
            "execute",
            json!({"cmd": "x", "recurring_period": 1, "domain": 5, "name": "n"}),
        ),
        ("execute", json!(["not", "an", "object"])),
        ("ping", json!({})),
        (
            "execute",
            json!({"cmd": "x", "args": ["y".repeat(MAX_COMMAND)]}),
        ),
    ];
    for (cmd, args) in refusals {
        let mut r = JobResult::new(id, 1, 5, cmd, args.clone(), JobState::Ok);
        (r.run, r.is_final) = (1, false);
        let outcome = results::record(&state, "1:5", &r).await.expect("answered");
        assert!(
            matches!(outcome, Outcome::ConfigJobRefused(Refusal::Command(_))),
            "{cmd} {outcome:?}"
        );
        assert!(!exists(&mut conn, &keys::job(id)).await, "{cmd} {args}");
        assert!(!exists(&mut conn, &keys::results(id)).await, "{cmd}");
        let mut answer = schemas::BatchAnswer::default();
        outcome.add_to(&mut answer, id);
        assert_eq!(answer.rejected[0].error, "invalid_config_job");
    }
    let named: Vec<String> = redis::cmd("KEYS")
        .arg("jobs:name:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(named.is_empty(), "{named:?}");
    // The messages name the bound.
    assert_eq!(schemas::config_job::MAX_KEY_PART, 200);
}

/// Regression: an agent could open records under any number of distinct `cfg:` ids. It has at
/// most MAX_DECLARED config jobs (its own limit of tables); one not seen for a TTL makes room.
#[tokio::test]
async fn an_agent_has_at_most_max_declared_config_jobs() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let mut conn = state.conn();
    let ids: Vec<String> = (0..MAX_DECLARED).map(|i| format!("cfg:1:5:j{i}")).collect();
    let warnings = declare(&state, "1:5", 1000, &ids).await.expect("declared");
    assert!(warnings.is_empty(), "{warnings:?}");
    // One more: refused by a result and by a hello alike, and nothing written.
    let extra = "cfg:1:5:extra";
    let outcome = results::record(&state, "1:5", &result(extra, 1, false, JobState::Ok)).await;
    assert_eq!(
        outcome.expect("answered"),
        Outcome::ConfigJobRefused(Refusal::TooMany)
    );
    assert!(!exists(&mut conn, &keys::job(extra)).await);
    let mut too_many = ids.clone();
    too_many.push(extra.to_owned());
    let warnings = declare(&state, "1:5", 1000, &too_many)
        .await
        .expect("declared");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(!exists(&mut conn, &keys::job(extra)).await);
    // Nor does its live output start a stream for it.
    let line = json!({"fd": 1, "level": 1, "line": "up", "time": 1});
    let body = json!([{"id": extra, "seq": 1, "lines": [line]}]).to_string();
    let (batches, mut answer) = crate::output::parse_batch(body.as_bytes()).expect("valid");
    crate::output::append(&state, "1:5", batches, &mut answer)
        .await
        .expect("answered");
    assert_eq!(
        (answer.appended, answer.rejected.len()),
        (0, 1),
        "{answer:?}"
    );
    assert!(!exists(&mut conn, &keys::output(extra)).await);
    // The known ones go on; another agent has its own count.
    let known = results::record(&state, "1:5", &result(&ids[3], 1, false, JobState::Ok)).await;
    assert_eq!(known.expect("answered"), Outcome::Recorded);
    let mut other = result("cfg:1:6:extra", 1, false, JobState::Ok);
    (other.gid, other.nid) = (1, 6);
    let outcome = results::record(&state, "1:6", &other).await;
    assert_eq!(outcome.expect("answered"), Outcome::Recorded);
    // One not seen for a TTL (its record expired) makes room.
    let _: i64 = redis::cmd("ZADD")
        .arg(keys::agent_config_jobs("1:5"))
        .arg(1)
        .arg(&ids[0])
        .query_async(&mut conn)
        .await
        .expect("ZADD");
    let outcome = results::record(&state, "1:5", &result(extra, 1, false, JobState::Ok)).await;
    assert_eq!(outcome.expect("answered"), Outcome::Recorded);
}

/// A hello names every config job the agent has: jobs of tables renamed or removed leave the
/// agent's count at once, so new ones are not refused until the old ones age out.
#[tokio::test]
async fn a_hello_frees_the_places_of_config_jobs_the_agent_no_longer_has() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let old: Vec<String> = (0..MAX_DECLARED)
        .map(|i| format!("cfg:1:5:old{i}"))
        .collect();
    declare(&state, "1:5", 1000, &old).await.expect("declared");
    let renamed: Vec<String> = (0..MAX_DECLARED)
        .map(|i| format!("cfg:1:5:new{i}"))
        .collect();
    let warnings = declare(&state, "1:5", 2000, &renamed)
        .await
        .expect("declared");
    assert!(warnings.is_empty(), "{warnings:?}");
    let outcome =
        results::record(&state, "1:5", &result(&renamed[7], 1, false, JobState::Ok)).await;
    assert_eq!(outcome.expect("answered"), Outcome::Recorded);
}

/// Regression: each restart or kill of a config job added a final result to its list that the
/// trim never removed. Its list keeps its newest `max_results` results of any kind.
#[tokio::test]
async fn a_config_jobs_final_results_are_bounded_like_its_runs() {
    let server = RedisServer::start();
    let config = Config {
        max_results: 3,
        ..Config::default()
    };
    let state = testkit::state(&server, config).await;
    let id = "cfg:1:5:tick";
    for run in 1..=8 {
        let outcome =
            results::record(&state, "1:5", &result(id, run, true, JobState::Killed)).await;
        assert_eq!(outcome.expect("answered"), Outcome::Recorded, "run {run}");
    }
    let kept = listed(&mut state.conn(), id).await;
    let runs: Vec<u64> = kept.iter().map(|r| r.run).collect();
    assert_eq!(runs, vec![6, 7, 8]);
}

/// Regression: the agent posted run 7's final result, the controller recorded it, the agent was
/// killed before the answer; its restart's hello reopened the record, and the outbox's retry of
/// run 7's final then ended the record while the job ran again.
#[tokio::test]
async fn a_final_result_posted_again_after_a_reopen_does_not_end_the_record() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let id = "cfg:1:5:tick";
    let ids = [id.to_owned()];
    let mut conn = state.conn();
    declare(&state, "1:5", 1000, &ids).await.expect("declared");
    let last = result(id, 7, true, JobState::Killed);
    let outcome = results::record(&state, "1:5", &last).await;
    assert_eq!(outcome.expect("answered"), Outcome::Recorded);
    // The agent's next start.
    declare(&state, "1:5", 2000, &ids).await.expect("declared");
    assert_eq!(fields(&mut conn, id).await["state"], "RUNNING");
    let outcome = results::record(&state, "1:5", &last).await;
    assert_eq!(outcome.expect("answered"), Outcome::Duplicate);
    // Listed once (its mark is kept).
    assert_eq!(listed(&mut conn, id).await.len(), 1);
    let mut older = result(id, 6, true, JobState::Error);
    older.data = json!("older");
    let outcome = results::record(&state, "1:5", &older).await;
    assert_eq!(outcome.expect("answered"), Outcome::Duplicate);
    let f = fields(&mut conn, id).await;
    assert_eq!(f["state"], "RUNNING");
    assert!(!f.contains_key("result:1:5"), "{f:?}");
    // Another end at the same run (killed before this start's first run) is a new end.
    let mut again = result(id, 7, true, JobState::Killed);
    again.data = json!("killed by kill command k2");
    let outcome = results::record(&state, "1:5", &again).await;
    assert_eq!(outcome.expect("answered"), Outcome::Recorded);
    assert_eq!(fields(&mut conn, id).await["state"], "KILLED");

    // The same when a later run's result reopened the record instead of a hello.
    let id = "cfg:1:5:other";
    let last = result(id, 3, true, JobState::Killed);
    let post = |r: JobResult| {
        let state = state.clone();
        async move { results::record(&state, "1:5", &r).await.expect("answered") }
    };
    assert_eq!(post(last.clone()).await, Outcome::Recorded);
    assert_eq!(
        post(result(id, 4, false, JobState::Ok)).await,
        Outcome::Recorded
    );
    assert_eq!(post(last).await, Outcome::Duplicate);
    assert_eq!(fields(&mut conn, id).await["state"], "RUNNING");
}

/// Regression: a config job's `env` (often secrets) went to Redis in its record and results.
#[tokio::test]
async fn a_config_jobs_env_values_are_not_kept() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let id = "cfg:1:5:tick";
    let args = json!({"cmd": "echo", "recurring_period": 1, "env": {"SECRET": "x"}});
    // Built by hand, as an agent that does not mask would post it.
    let mut r: JobResult = serde_json::from_value(json!({
        "id": id, "gid": 1, "nid": 5, "cmd": "execute", "args": args, "state": "OK",
        "run": 1, "final": false,
    }))
    .expect("a result");
    assert_eq!(r.args["env"]["SECRET"], "x");
    assert_eq!(
        results::record(&state, "1:5", &r).await.expect("answered"),
        Outcome::Recorded
    );
    (r.run, r.is_final) = (2, true);
    assert_eq!(
        results::record(&state, "1:5", &r).await.expect("answered"),
        Outcome::Recorded
    );
    let mut conn = state.conn();
    let f = fields(&mut conn, id).await;
    for (field, value) in &f {
        assert!(!value.contains("\"x\""), "{field}: {value}");
    }
    let cmd: Value = serde_json::from_str(&f["cmd"]).expect("JSON");
    assert_eq!(cmd["args"]["env"], json!({"SECRET": "***"}));
    for kept in listed(&mut conn, id).await {
        assert_eq!(kept.args["env"], json!({"SECRET": "***"}));
    }
}
