//! `jsacc -r rediss://… --redis-ca …`: the controller and `jsacc token` talk to a TLS-only
//! redis-server.

use serde_json::json;
use tests::{Controller, ControllerOpts, Redis};

#[test]
fn the_controller_routes_through_a_tls_redis() {
    let redis = Redis::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    let controller = Controller::start(&redis, ControllerOpts::default());
    let token = redis.token_add(1, 1);
    let client = redis.client();
    let stored: Option<String> = redis::cmd("HGET")
        .arg("auth:agents")
        .arg("1:1")
        .query(&mut client.blocking())
        .expect("HGET");
    assert!(stored.is_some(), "the token's hash is in the TLS Redis");

    client.push(&json!({"id": "over-tls", "gid": 1, "nid": 1, "cmd": "ping"}));
    let resp = controller
        .http()
        .get(format!("{}/v1/agents/1/1/cmd?wait=10", controller.url()))
        .bearer_auth(&token)
        .send()
        .expect("poll");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert_eq!(
        resp.json::<serde_json::Value>().expect("JSON")["id"],
        "over-tls"
    );
}
