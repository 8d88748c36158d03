//! The answer itself (pure), and the two ways the router gives it against a real redis-server:
//! a command refused for a bad argument, and one dead-lettered after Redis kept refusing it.

use serde_json::{json, Value};

use super::*;
use crate::config::Config;
use crate::keys;
use crate::state::Shared;
use crate::testkit::{self, RedisServer};

fn answer(raw: &str) -> JobResult {
    error_result("j1", raw.as_bytes(), None, "why")
}

#[test]
fn a_parsed_command_is_answered_with_its_agent_cmd_and_args() {
    let raw = json!({"id": "j1", "gid": 3, "nid": 4, "cmd": "ping", "args": {"max_wait": 9}});
    let raw = raw.to_string();
    let (cmd, _) = Command::parse(raw.as_bytes()).unwrap();
    let r = error_result("j1", raw.as_bytes(), Some(&cmd), "why");
    assert_eq!((r.gid, r.nid, r.cmd.as_str()), (3, 4, "ping"));
    assert_eq!((r.args, r.data), (json!({"max_wait": 9}), json!("why")));
    // A role's command has no nid.
    let raw = json!({"id": "j1", "gid": 3, "role": "web", "cmd": "ping"}).to_string();
    let (cmd, _) = Command::parse(raw.as_bytes()).unwrap();
    let r = error_result("j1", raw.as_bytes(), Some(&cmd), "why");
    assert_eq!((r.gid, r.nid), (3, 0));
}

#[test]
fn a_command_that_does_not_parse_is_answered_with_what_it_gives() {
    let args = json!({"cmd": "uptime", "cron": "* *"});
    let raw = json!({"id": "j1", "gid": 1, "nid": 5, "cmd": "execute", "args": args});
    let r = answer(&raw.to_string());
    assert_eq!(
        (r.gid, r.nid, r.cmd.as_str(), &r.args),
        (1, 5, "execute", &args)
    );
    // Each field only when it has its type.
    let r = answer(r#"{"gid": "1", "nid": -5, "cmd": 7, "args": [1], "data": {"x": [1, 2]}}"#);
    assert_eq!(
        (r.gid, r.nid, r.cmd.as_str(), &r.args),
        (0, 0, "", &Value::Null)
    );
    let r = answer(r#"{"gid": 1e300, "nid": 18446744073709551615, "cmd": "ping"}"#);
    assert_eq!((r.gid, r.nid, r.cmd.as_str()), (0, u64::MAX, "ping"));
    let long = json!({"gid": 1, "cmd": "c".repeat(MAX_NAME + 1)}).to_string();
    assert_eq!(answer(&long).cmd, "");
    let big = json!({"gid": 1, "args": {"x": "a".repeat(LETTER_RAW_MAX)}}).to_string();
    assert_eq!((answer(&big).gid, answer(&big).args), (1, Value::Null));
}

#[test]
fn garbage_is_answered_without_an_agent() {
    for raw in [
        "",
        "not json",
        "\u{0}\u{ff}",
        r#"[1, 2, "ping", {}]"#,
        r#"  [{"gid": 1}]"#,
        "42",
        r#"{"gid": 1, "gid": 2}"#,
        r#"{"gid": 1, "nid": 2"#,
    ] {
        let r = answer(raw);
        assert_eq!(
            (r.id.as_str(), r.gid, r.nid, r.cmd.as_str()),
            ("j1", 0, 0, ""),
            "{raw}"
        );
        assert_eq!(r.state, schemas::JobState::Error);
    }
}

/// The answers written to `cmds_queue_<id>`.
async fn answers(state: &Shared, id: &str) -> Vec<Value> {
    testkit::results_of(&mut state.conn(), id).await
}

/// Issue 10: a command refused for a bad argument was answered with gid 0 and nid 0.
#[tokio::test]
async fn a_command_refused_for_a_bad_argument_is_answered_with_its_agent() {
    let server = RedisServer::start();
    let state = testkit::state(&server, Config::default()).await;
    let args = json!({"cmd": "uptime", "cron": "*/5 * *"});
    let raw = json!({"id": "badcron", "gid": 1, "nid": 2, "cmd": "execute", "args": args});
    let settled = super::super::route_batch(&state, &[(raw.to_string().into_bytes(), false)])
        .await
        .expect("routed");
    assert!(
        matches!(settled[..], [super::super::Settled::Done]),
        "{settled:?}"
    );
    let answers = answers(&state, "badcron").await;
    let r = &answers[0];
    assert_eq!(
        (&r["state"], &r["gid"], &r["nid"], &r["cmd"], &r["args"]),
        (
            &json!("ERROR"),
            &json!(1),
            &json!(2),
            &json!("execute"),
            &args
        ),
        "{r}"
    );
    assert!(
        r["data"].as_str().is_some_and(|d| d.contains("args.cron")),
        "{r}"
    );
}

/// Issue 10: a command dead-lettered after `--route-tries` was answered with gid 0, nid 0 and
/// cmd "", though its text names them.
#[tokio::test]
async fn a_dead_lettered_command_is_answered_with_its_agent_and_cmd() {
    let server = RedisServer::start();
    let config = Config {
        route_tries: 2,
        ..Config::default()
    };
    let state = testkit::state(&server, config).await;
    let mut conn = state.conn();
    crate::auth::add(&mut conn, 1, 2, &[])
        .await
        .expect("a token");
    // Every write of the job record fails WRONGTYPE.
    let () = redis::cmd("SET")
        .arg(keys::job("stuck"))
        .arg("occupied")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let raw = json!({"id": "stuck", "gid": 1, "nid": 2, "cmd": "ping"}).to_string();
    let batch = [(raw.into_bytes(), false)];
    let route = || super::super::route_from(&state, "routing:test", &batch);
    assert_eq!(route().await.expect("tried"), 0, "kept for another try");
    assert_eq!(route().await.expect("tried"), 1, "dead-lettered");
    let answers = answers(&state, "stuck").await;
    let r = &answers[0];
    assert_eq!(
        (&r["state"], &r["gid"], &r["nid"], &r["cmd"]),
        (&json!("ERROR"), &json!(1), &json!(2), &json!("ping")),
        "{r}"
    );
    assert!(
        r["data"].as_str().is_some_and(|d| d.contains("WRONGTYPE")),
        "{r}"
    );
}
