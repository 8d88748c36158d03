//! The handlers through [`app`], as a client sees them, without a network: each test starts a
//! real redis-server and sends requests with `oneshot`.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{app, Api};
use crate::testkit::{self, RedisServer};

/// What came back: the status and the body, as JSON when it is.
async fn send(api: &Api, req: Request<Body>) -> (StatusCode, Value) {
    let response = app(api.clone()).oneshot(req).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

fn post(path: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    req.body(body.into()).expect("a request")
}

/// The state on a fresh redis-server, and a token of agent 1:1 with role `web`.
async fn agent() -> (RedisServer, Api, String) {
    agent_with(crate::config::Config::default()).await
}

async fn agent_with(config: crate::config::Config) -> (RedisServer, Api, String) {
    let server = RedisServer::start();
    let api = testkit::api_with(&server, config).await;
    let token = crate::auth::add(&mut api.state.conn(), 1, 1, &["web".to_owned()])
        .await
        .expect("a token");
    (server, api, token)
}

#[tokio::test]
async fn operator_endpoints_answer_and_unknown_paths_are_json_404s() {
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    let get = |p: &str| Request::get(p).body(Body::empty()).expect("a request");
    assert_eq!(
        send(&api, get("/healthz")).await,
        (StatusCode::OK, json!("ok\n"))
    );
    let (status, body) = send(&api, get("/nope")).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    // No peer address and no metrics token: refused.
    let (status, body) = send(&api, get("/metrics")).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthorized"))
    );
    let (status, _) = send(&api, post("/healthz", None, "x")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_hello_needs_the_agents_own_token_and_is_answered_with_its_roles() {
    let (_server, api, token) = agent().await;
    let hello = json!({"hostname": "h", "roles": ["web", "db"]}).to_string();
    let (status, body) = send(&api, post("/v1/agents/1/1/hello", None, hello.clone())).await;
    assert_eq!(
        (status, &body["message"]),
        (StatusCode::UNAUTHORIZED, &json!("missing bearer token"))
    );
    let (status, _) = send(
        &api,
        post("/v1/agents/1/1/hello", Some("wrong"), hello.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send(
        &api,
        post("/v1/agents/1/2/hello", Some(&token), hello.clone()),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    let (status, body) = send(&api, post("/v1/agents/1/1/hello", Some(&token), hello)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: schemas::HelloAnswer = serde_json::from_value(body).expect("a hello answer");
    assert_eq!(
        (answer.lease, answer.roles),
        (60, Some(vec!["web".to_owned()]))
    );
    assert!(answer.warnings[0].contains("db"), "{:?}", answer.warnings);
    let (status, body) = send(&api, post("/v1/agents/1/1/hello", Some(&token), "{")).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("bad_request"))
    );
}

#[tokio::test]
async fn results_of_unknown_jobs_and_invalid_items_are_refused_each_with_a_reason() {
    let (_server, api, token) = agent().await;
    let result = |id: &str, nid: u64| json!({"id": id, "gid": 1, "nid": nid, "cmd": "execute", "state": "OK", "data": ""});
    let one = result("nope", 1).to_string();
    let (status, body) = send(&api, post("/v1/agents/1/1/result", Some(&token), one)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("unknown_job"))
    );
    let batch = json!([result("a", 1), result("b", 2), {"id": "c"}]).to_string();
    let (status, body) = send(&api, post("/v1/agents/1/1/result", Some(&token), batch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: schemas::BatchAnswer = serde_json::from_value(body).expect("a batch answer");
    let errors: Vec<_> = answer
        .rejected
        .iter()
        .map(|r| (r.id.as_str(), r.error.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            ("b", "mismatched_agent"),
            ("c", "bad_request"),
            ("a", "unknown_job")
        ]
    );
}

#[tokio::test]
async fn logs_and_stats_are_taken_once_and_a_body_over_the_limit_is_413() {
    let (_server, api, token) = agent().await;
    let logs = json!([{"id": 1, "jobid": "j", "domain": "ops", "name": "x", "epoch": 1,
                       "level": 5, "data": "hi"}, 42])
    .to_string();
    let (status, body) = send(
        &api,
        post("/v1/agents/1/1/logs", Some(&token), logs.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["stored"], &body["rejected"]), (&json!(1), &json!(1)));
    let (_, again) = send(&api, post("/v1/agents/1/1/logs", Some(&token), logs)).await;
    assert_eq!(
        (&again["stored"], &again["duplicates"]),
        (&json!(0), &json!(1))
    );
    let stats = json!({"gid": 1, "nid": 1, "epoch": 1, "interval": 10.0,
                       "metrics": [{"key": "k", "type": "gauge", "value": 1.0}]})
    .to_string();
    let (status, body) = send(&api, post("/v1/agents/1/1/stats", Some(&token), stats)).await;
    assert_eq!(
        (status, &body["recorded"]),
        (StatusCode::OK, &json!(1)),
        "{body}"
    );
    let huge = vec![b' '; api.state.config.max_body + 1];
    let (status, body) = send(&api, post("/v1/agents/1/1/logs", Some(&token), huge)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::PAYLOAD_TOO_LARGE, &json!("too_large"))
    );
}

#[tokio::test]
async fn redis_refusing_is_a_500_and_redis_gone_is_a_503() {
    let (mut server, api, token) = agent().await;
    // A string where the agent's facts hash belongs: Redis refuses the hello's write.
    let _: () = redis::cmd("SET")
        .arg(crate::keys::agent("1:1"))
        .arg("not a hash")
        .query_async(&mut api.state.conn())
        .await
        .expect("SET");
    let hello = json!({"hostname": "h"}).to_string();
    let (status, body) = send(
        &api,
        post("/v1/agents/1/1/hello", Some(&token), hello.clone()),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::INTERNAL_SERVER_ERROR, &json!("internal"))
    );
    server.kill();
    let (status, body) = send(&api, post("/v1/agents/1/1/hello", Some(&token), hello)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable")),
        "{body}"
    );
}

#[tokio::test]
async fn output_is_appended_once_per_batch_up_to_the_cap_and_only_by_a_target() {
    let config = crate::config::Config {
        output_maxlen: 3,
        ..Default::default()
    };
    // (The byte cap is tested below.)
    let (_server, api, token) = agent_with(config).await;
    let mut conn = api.state.conn();
    for (id, targets) in [("j", r#"["1:1"]"#), ("other", r#"["2:2"]"#)] {
        let _: () = redis::cmd("HSET")
            .arg(crate::keys::job(id))
            .arg("targets")
            .arg(targets)
            .query_async(&mut conn)
            .await
            .expect("HSET");
    }
    let line =
        |i: u64| json!({"fd": 1 + i % 2, "level": 1 + i % 2, "line": format!("l{i}"), "time": i});
    let batch = |id: &str, seq: u64, lines: &[u64]| json!({"id": id, "seq": seq, "lines": lines.iter().map(|i| line(*i)).collect::<Vec<_>>()});
    let first = json!([batch("j", 1, &[0, 1])]).to_string();
    let (status, body) = send(
        &api,
        post("/v1/agents/1/1/output", Some(&token), first.clone()),
    )
    .await;
    assert_eq!(
        (status, &body["appended"]),
        (StatusCode::OK, &json!(2)),
        "{body}"
    );
    let (_, again) = send(&api, post("/v1/agents/1/1/output", Some(&token), first)).await;
    assert_eq!(
        (&again["appended"], &again["duplicates"]),
        (&json!(0), &json!(1)),
        "{again}"
    );
    let more = json!([
        batch("j", 2, &[2, 3, 4]),
        batch("other", 3, &[5]),
        batch("gone", 4, &[6])
    ]);
    let (_, body) = send(
        &api,
        post("/v1/agents/1/1/output", Some(&token), more.to_string()),
    )
    .await;
    assert_eq!(
        (&body["appended"], &body["capped"]),
        (&json!(1), &json!(2)),
        "{body}"
    );
    let refused: Vec<&str> = body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(refused, ["gone", "other"]);
    let stop: Vec<&str> = body["stop"]
        .as_array()
        .expect("stop")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(
        stop,
        ["gone", "other", "j"],
        "no more for a capped, unknown or foreign job"
    );
    let after = json!([batch("j", 5, &[7])]).to_string();
    let (_, body) = send(&api, post("/v1/agents/1/1/output", Some(&token), after)).await;
    assert_eq!(
        (&body["appended"], &body["capped"], &body["stop"]),
        (&json!(0), &json!(1), &json!(["j"]))
    );
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(crate::keys::output("j"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    let lines: Vec<(&str, &str)> = entries
        .iter()
        .map(|(_, fields)| {
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(f, _)| f == k)
                    .map_or("", |(_, v)| v.as_str())
            };
            (get("level"), get("line"))
        })
        .collect();
    assert_eq!(&lines[..3], &[("1", "l0"), ("2", "l1"), ("1", "l2")]);
    assert_eq!(lines.len(), 4, "three lines and the cap marker: {lines:?}");
    assert!(
        lines[3].0 == "0" && lines[3].1.contains("capped at 3 lines"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn output_is_capped_by_bytes_too_and_the_record_lives_while_the_job_prints() {
    let config = crate::config::Config {
        output_maxbytes: 10,
        ..Default::default()
    };
    let (_server, api, token) = agent_with(config).await;
    let mut conn = api.state.conn();
    let _: () = redis::cmd("HSET")
        .arg(crate::keys::job("b"))
        .arg("targets")
        .arg(r#"["1:1"]"#)
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let line = |text: &str| json!({"fd": 1, "level": 1, "line": text, "time": 1});
    let body = json!([{"id": "b", "seq": 1, "lines": [line("12345"), line("67890"), line("x")]}]);
    let (status, body) = send(
        &api,
        post("/v1/agents/1/1/output", Some(&token), body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["appended"], &body["capped"]),
        (&json!(2), &json!(1)),
        "{body}"
    );
    assert_eq!(body["stop"], json!(["b"]));
    let ttl: i64 = redis::cmd("TTL")
        .arg(crate::keys::job("b"))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(ttl > 0, "the post gave the job record a TTL: {ttl}");
    let batches: Vec<Value> = (0..super::super::output::MAX_BATCHES + 1)
        .map(|i| json!({"id": "b", "seq": i + 2, "lines": []}))
        .collect();
    let too_many = Value::Array(batches).to_string();
    let (status, body) = send(&api, post("/v1/agents/1/1/output", Some(&token), too_many)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// An operator account's token.
async fn account(api: &Api, name: &str, role: crate::users::Role) -> String {
    crate::users::add(&mut api.state.conn(), name, role)
        .await
        .expect("an account")
}

fn get_as(path: &str, token: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("a request")
}

#[tokio::test]
async fn operators_submit_list_read_and_kill_jobs_as_their_role_allows() {
    use crate::users::Role;
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    let viewer = account(&api, "vera", Role::Viewer).await;
    let operator = account(&api, "otto", Role::Operator).await;
    let cmd = json!({"gid": 1, "nid": 1, "cmd": "ping"}).to_string();

    let (status, _) = send(&api, Request::get("/v1/jobs").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send(&api, post("/v1/jobs", Some(&viewer), cmd.clone())).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::FORBIDDEN, &json!("forbidden")),
        "{body}"
    );
    let (status, body) = send(&api, post("/v1/jobs", Some(&operator), cmd)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    let mut conn = api.state.conn();
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg("cmds_queue")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let pushed: Value = serde_json::from_str(&queued[0]).unwrap();
    assert_eq!(
        (&pushed["id"], &pushed["submitted_by"]),
        (&json!(id), &json!("otto"))
    );
    let (status, body) = send(&api, post("/v1/jobs", Some(&operator), r#"{"gid": 1}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // As the router would have recorded it, with one line of output.
    let _: () = redis::pipe()
        .hset_multiple(
            crate::keys::job(&id),
            &[
                ("state", "RUNNING"),
                ("targets", r#"["1:1"]"#),
                ("created", "5"),
                ("cmd", "{}"),
            ],
        )
        .zadd(crate::keys::JOBS_ALL, &id, schemas::now_ms())
        .cmd("XADD")
        .arg(crate::keys::output(&id))
        .arg("*")
        .arg(&[
            ("agent", "1:1"),
            ("fd", "1"),
            ("level", "1"),
            ("line", "hello"),
            ("time", "6"),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, body) = send(&api, get_as("/v1/jobs?state=RUNNING&since=1h", &viewer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["jobs"][0]["id"], json!(id));
    let (_, body) = send(&api, get_as("/v1/jobs?state=OK", &viewer)).await;
    assert_eq!(body["jobs"], json!([]));
    let (status, body) = send(&api, get_as(&format!("/v1/jobs/{id}"), &viewer)).await;
    assert_eq!(
        (status, &body["targets"]),
        (StatusCode::OK, &json!(["1:1"])),
        "{body}"
    );
    let (_, body) = send(&api, get_as(&format!("/v1/jobs/{id}/output"), &viewer)).await;
    assert_eq!(
        (&body["lines"][0]["line"], &body["ended"]),
        (&json!("hello"), &json!(false))
    );
    let (status, _) = send(&api, get_as("/v1/jobs/nope", &viewer)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let delete = |token: &str| {
        Request::delete(format!("/v1/jobs/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, _) = send(&api, delete(&viewer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(&api, delete(&operator)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["kills"].as_array().map(Vec::len), Some(1));
    let trail: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("audit")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let whats: Vec<String> = trail
        .iter()
        .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "what").map(|(_, v)| v.clone()))
        .collect();
    assert_eq!(whats, ["job submit", "job kill"]);
}

#[tokio::test]
async fn following_a_finished_jobs_output_sends_every_line_then_its_end() {
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    let viewer = account(&api, "vera", crate::users::Role::Viewer).await;
    let mut conn = api.state.conn();
    let mut pipe = redis::pipe();
    pipe.hset_multiple(
        crate::keys::job("f"),
        &[("state", "OK"), ("targets", r#"["1:1"]"#)],
    );
    for line in ["one", "two"] {
        pipe.cmd("XADD")
            .arg(crate::keys::output("f"))
            .arg("*")
            .arg(&[
                ("agent", "1:1"),
                ("fd", "1"),
                ("level", "1"),
                ("line", line),
                ("time", "1"),
            ]);
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let (status, body) = send(&api, get_as("/v1/jobs/f/output?follow=1", &viewer)).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("an event stream");
    assert_eq!(text.matches("event: line").count(), 2, "{text}");
    assert!(
        text.contains("\"line\":\"two\"") && text.contains("event: end"),
        "{text}"
    );
    assert!(text.contains(r#"data: {"state":"OK"}"#), "{text}");
}

#[tokio::test]
async fn viewers_see_agents_and_logs_and_only_admins_manage_accounts_and_tokens() {
    use crate::users::Role;
    let (_server, api, token) = agent().await;
    let viewer = account(&api, "vera", Role::Viewer).await;
    let admin = account(&api, "ada", Role::Admin).await;
    let hello = json!({"hostname": "web-1", "os": "linux", "roles": ["web"]}).to_string();
    let (status, _) = send(&api, post("/v1/agents/1/1/hello", Some(&token), hello)).await;
    assert_eq!(status, StatusCode::OK);

    let (_, me) = send(&api, get_as("/v1/me", &viewer)).await;
    assert_eq!(me, json!({"name": "vera", "role": "viewer"}));
    let (status, body) = send(&api, get_as("/v1/agents", &viewer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let one = &body["agents"][0];
    assert_eq!(
        (&one["agent"], &one["hostname"], &one["online"]),
        (&json!("1:1"), &json!("web-1"), &json!(true))
    );
    assert_eq!(one["roles"], json!(["web"]));
    let (status, body) = send(&api, get_as("/v1/agents/1/1", &viewer)).await;
    assert_eq!(
        (status, &body["agent"]["os"]),
        (StatusCode::OK, &json!("linux")),
        "{body}"
    );
    let (status, body) = send(&api, get_as("/v1/agents/9/9", &viewer)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("unknown_agent"))
    );
    // An agent's own token does not open the operator API.
    let (status, _) = send(&api, get_as("/v1/agents/1/1", &token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let logs = json!([{"id": 1, "jobid": "j", "domain": "ops", "name": "x", "epoch": 1,
                       "level": 5, "data": "hello"}])
    .to_string();
    send(&api, post("/v1/agents/1/1/logs", Some(&token), logs)).await;
    let (_, body) = send(&api, get_as("/v1/logs/ops/x", &viewer)).await;
    assert_eq!(
        body["messages"][0]["fields"]["data"],
        json!("hello"),
        "{body}"
    );
    api.shutdown.cancel(); // a follower then sends what there is and stops
    let (status, body) = send(&api, get_as("/v1/logs/ops/x?follow=1&after=0", &viewer)).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("events");
    assert!(
        text.contains("event: log") && text.contains("hello"),
        "{text}"
    );

    let new_user = json!({"name": "otto", "role": "operator"}).to_string();
    let (status, _) = send(&api, post("/v1/users", Some(&viewer), new_user.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(&api, post("/v1/users", Some(&admin), new_user.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["token"]
        .as_str()
        .is_some_and(|t| t.starts_with("jso_")));
    let (status, _) = send(&api, post("/v1/users", Some(&admin), new_user)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, body) = send(&api, get_as("/v1/users", &admin)).await;
    assert!(!body.to_string().contains("hash"), "{body}");
    let new_token = json!({"gid": 2, "nid": 3, "roles": ["db"]}).to_string();
    let (status, body) = send(&api, post("/v1/tokens", Some(&admin), new_token)).await;
    assert_eq!(
        (status, &body["agent"]),
        (StatusCode::CREATED, &json!("2:3")),
        "{body}"
    );
    let delete = |path: &str| {
        Request::delete(path)
            .header(header::AUTHORIZATION, format!("Bearer {admin}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&api, delete("/v1/tokens/2/3")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&api, delete("/v1/tokens/2/3")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&api, delete("/v1/users/otto")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&api, delete("/v1/users/otto")).await.0,
        StatusCode::NOT_FOUND
    );
}

/// `record_result.lua` takes a run's result (`"final": false`) for a job whose command has a
/// non-empty `args.cron`, as for `recurring_period`, and refuses it for a job that runs once.
#[tokio::test]
async fn a_cron_jobs_run_results_reach_its_result_list() {
    let (_server, api, token) = agent().await;
    let mut conn = api.state.conn();
    for (id, args) in [
        ("cron", json!({"cmd": "true", "cron": "* * * * * *"})),
        ("once", json!({"cmd": "true"})),
    ] {
        let cmd = json!({"id": id, "gid": 1, "nid": 1, "cmd": "execute", "args": args});
        let () = redis::cmd("HSET")
            .arg(crate::keys::job(id))
            .arg("cmd")
            .arg(cmd.to_string())
            .arg("state")
            .arg("RUNNING")
            .arg("targets")
            .arg(r#"["1:1"]"#)
            .query_async(&mut conn)
            .await
            .expect("a job record");
    }
    let run = |id: &str, n: u64| {
        json!({"id": id, "gid": 1, "nid": 1, "cmd": "execute", "state": "OK", "data": "",
               "run": n, "skipped": 2, "final": false})
        .to_string()
    };
    for n in [1, 2] {
        let (status, body) = send(
            &api,
            post("/v1/agents/1/1/result", Some(&token), run("cron", n)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(crate::keys::results("cron"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("the result list");
    let runs: Vec<Value> = list
        .iter()
        .map(|r| serde_json::from_str(r).expect("json"))
        .collect();
    let numbers: Vec<(&Value, &Value)> = runs.iter().map(|r| (&r["run"], &r["skipped"])).collect();
    assert_eq!(numbers, [(&json!(1), &json!(2)), (&json!(2), &json!(2))]);
    let (status, body) = send(
        &api,
        post("/v1/agents/1/1/result", Some(&token), run("once", 1)),
    )
    .await;
    assert_eq!(
        (status, &body["rejected"][0]["error"]),
        (StatusCode::OK, &json!("not_recurring")),
        "{body}"
    );
}
