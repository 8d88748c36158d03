//! `POST /v1/enroll` through [`crate::http::app`], against a real redis-server.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::enroll::{self, Grant};
use crate::http::{app, Api};
use crate::testkit::{self, RedisServer};

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

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("a request")
}

async fn code(api: &Api, nid: Option<u64>, ttl: Duration) -> String {
    let grant = Grant {
        gid: 4,
        nid,
        roles: vec!["web".into()],
        ttl,
        uses: 1,
    };
    enroll::create(&mut api.state.conn(), &grant, schemas::now_ms())
        .await
        .expect("a code")
}

#[tokio::test]
async fn a_code_is_answered_with_a_token_that_works_at_once() {
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    let code = code(&api, None, enroll::DEFAULT_TTL).await;
    let body = json!({"code": code, "hostname": "web-7"}).to_string();
    let (status, answer) = send(&api, post(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["gid"], &answer["nid"], &answer["roles"]),
        (&json!(4), &json!(1), &json!(["web"]))
    );
    let token = answer["token"].as_str().expect("a token");
    // The agent says hello with it (the token snapshot learns it through auth:version).
    let hello = Request::post("/v1/agents/4/1/hello")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(json!({"hostname": "web-7"}).to_string()))
        .expect("a request");
    let (status, said) = send(&api, hello).await;
    assert_eq!(status, StatusCode::OK, "{said}");
    // Audited.
    let audit: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(crate::keys::AUDIT)
        .arg("-")
        .arg("+")
        .query_async(&mut api.state.conn())
        .await
        .expect("XRANGE");
    assert_eq!(audit.len(), 1);
    // Used.
    let (status, refused) = send(&api, post(body)).await;
    assert_eq!(
        (status, &refused["error"]),
        (StatusCode::FORBIDDEN, &json!("used_code"))
    );
    assert!(refused["message"]
        .as_str()
        .is_some_and(|m| m.contains("already used")));
}

#[tokio::test]
async fn refusals_have_distinct_codes() {
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    let cases = [
        (
            json!({"code": "jse_00"}),
            StatusCode::FORBIDDEN,
            "unknown_code",
        ),
        (json!({"code": ""}), StatusCode::BAD_REQUEST, "bad_request"),
        (json!({"cod": "x"}), StatusCode::BAD_REQUEST, "bad_request"),
        (json!(["jse_00"]), StatusCode::BAD_REQUEST, "bad_request"),
        (
            json!({"code": "x", "hostname": "a\nb"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (body, status, error) in cases {
        let (got, answer) = send(&api, post(body.to_string())).await;
        assert_eq!((got, &answer["error"]), (status, &json!(error)), "{body}");
    }
    let (status, _) = send(&api, post("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Taken node: 409, and the code still works once the token is revoked.
    crate::auth::add(&mut api.state.conn(), 4, 2, &[])
        .await
        .expect("a token");
    let fixed = code(&api, Some(2), enroll::DEFAULT_TTL).await;
    let (status, answer) = send(&api, post(json!({"code": fixed}).to_string())).await;
    assert_eq!(
        (status, &answer["error"]),
        (StatusCode::CONFLICT, &json!("enrolled"))
    );
    let (status, answer) = send(&api, post(json!({"code": fixed, "nid": 3}).to_string())).await;
    assert_eq!(
        (status, &answer["error"]),
        (StatusCode::FORBIDDEN, &json!("other_nid"))
    );
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    let grant = Grant {
        gid: 1,
        nid: None,
        roles: vec![],
        ttl: Duration::from_secs(1),
        uses: 1,
    };
    // Created two seconds ago.
    let code = enroll::create(&mut api.state.conn(), &grant, schemas::now_ms() - 2000)
        .await
        .expect("a code");
    let (status, answer) = send(&api, post(json!({"code": code}).to_string())).await;
    assert_eq!(
        (status, &answer["error"]),
        (StatusCode::FORBIDDEN, &json!("expired_code"))
    );
}

#[tokio::test]
async fn a_large_body_is_refused_before_it_is_read() {
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    let big = format!(r#"{{"code": "{}"}}"#, "a".repeat(8 << 10));
    let declared = Request::post("/v1/enroll")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .expect("a request");
    let (status, answer) = send(&api, declared).await;
    assert_eq!(
        (status, &answer["error"]),
        (StatusCode::PAYLOAD_TOO_LARGE, &json!("too_large"))
    );
    // Without a declared length: cut where it is read.
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(big.into_bytes())]);
    let (status, _) = send(&api, post(Body::from_stream(stream))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_body_that_never_comes_is_given_up_at_the_body_timeout() {
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    // Connected: now the clock may jump to the deadline.
    tokio::time::pause();
    let never = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let (status, answer) = send(&api, post(Body::from_stream(never))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["message"]
        .as_str()
        .is_some_and(|m| m.contains("body-timeout")));
}

#[tokio::test]
async fn a_failed_audit_write_still_gives_the_minted_token() {
    let server = RedisServer::start();
    let api = testkit::api(&server).await;
    // The audit stream cannot be written (a string where the stream should be).
    redis::cmd("SET")
        .arg(crate::keys::AUDIT)
        .arg("not a stream")
        .query_async::<()>(&mut api.state.conn())
        .await
        .expect("SET");
    let code = code(&api, None, enroll::DEFAULT_TTL).await;
    let (status, answer) = send(&api, post(json!({"code": code}).to_string())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let token = answer["token"].as_str().expect("a token");
    let stored: Option<String> = redis::cmd("HGET")
        .arg(crate::keys::AUTH_AGENTS)
        .arg("4:1")
        .query_async(&mut api.state.conn())
        .await
        .expect("HGET");
    assert_eq!(stored, Some(crate::auth::hash(token)));
}

#[tokio::test]
async fn an_enrollment_the_replicas_do_not_confirm_is_not_answered_with_a_token() {
    let server = RedisServer::start();
    let config = crate::config::Config {
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(50),
        ..Default::default()
    };
    let api = testkit::api_with(&server, config).await;
    let code = code(&api, None, enroll::DEFAULT_TTL).await;
    let (status, answer) = send(&api, post(json!({"code": code}).to_string())).await;
    assert_eq!(
        (status, &answer["error"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("not_replicated")),
        "{answer}"
    );
    assert!(answer.get("token").is_none(), "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("jsacc token revoke --gid 4 --nid 1"),
        "{message}"
    );
}

#[test]
fn an_enrollment_body_is_read() {
    let asked = crate::http::parse_enroll(
        br#"{"code": "jse_1", "hostname": "web-7", "nid": 18446744073709551615}"#,
    )
    .unwrap();
    assert_eq!(
        (asked.code.as_str(), asked.hostname.as_deref(), asked.nid),
        ("jse_1", Some("web-7"), Some(u64::MAX))
    );
    let asked = crate::http::parse_enroll(br#"{"code": "jse_1"}"#).unwrap();
    assert_eq!((asked.hostname, asked.nid), (None, None));
}

/// The one body read from a stranger: garbage, wrong types, huge numbers and oversized strings
/// are each refused with a short message naming the field.
#[test]
fn a_bad_enrollment_body_is_refused_naming_the_field() {
    let long_code = json!({"code": "c".repeat(129)}).to_string();
    let long_host = json!({"code": "x", "hostname": "h".repeat(254)}).to_string();
    let cases = [
        ("", "enrollment: not JSON"),
        ("\u{1b}[2J", "enrollment: not JSON"),
        (r#"["jse_00"]"#, "enrollment: expected a JSON object"),
        ("null", "enrollment: expected a JSON object"),
        (r#"{"code": 7}"#, "enrollment: code: invalid type: integer"),
        (r#"{"code": null}"#, "enrollment: code: invalid type: null"),
        (
            r#"{"code": "x", "nid": "1"}"#,
            "enrollment: nid: invalid type: string",
        ),
        (
            r#"{"code": "x", "nid": -1}"#,
            "enrollment: nid: invalid value: integer `-1`",
        ),
        (
            r#"{"code": "x", "nid": 18446744073709551616}"#,
            "enrollment: nid: invalid type: floating point",
        ),
        (
            r#"{"code": "x", "hostname": ["h"]}"#,
            "enrollment: hostname: invalid type: sequence",
        ),
        (
            r#"{"code": "x", "hostname": "a\nb"}"#,
            "enrollment: hostname: at most 253 bytes",
        ),
        (r#"{"hostname": "h"}"#, "enrollment: missing field `code`"),
        (r#"{"cod": "x"}"#, "enrollment: cod: unknown field `cod`"),
        (r#"{"code": ""}"#, "enrollment: code: 1 to 128 bytes, not 0"),
        (&long_code, "enrollment: code: 1 to 128 bytes, not 129"),
        (&long_host, "enrollment: hostname: at most 253 bytes"),
    ];
    for (body, start) in cases {
        let e = crate::http::parse_enroll(body.as_bytes()).expect_err(body);
        assert_eq!(e.code, "bad_request");
        assert!(e.message.starts_with(start), "{body:.80}: {}", e.message);
        assert!(e.message.len() < 300, "{body:.80}: {}", e.message);
    }
}
