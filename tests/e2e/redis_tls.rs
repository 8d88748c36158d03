//! `jsacc -r rediss://…`: the controller and `jsacc token` talk to a TLS-only redis-server.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tests::{bin_dir, free_port, wait_for, Controller, ControllerOpts, Redis};

#[test]
fn the_controller_routes_through_a_tls_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("cert");
    let (cert, key) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let port = free_port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server with TLS");
    let url = format!("rediss://127.0.0.1:{port}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(&cert).expect("cert");
    let tls = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    let client = redis::Client::build_with_tls(url.as_str(), tls).expect("client");
    let mut conn = wait_for("TLS redis-server", Duration::from_secs(10), || {
        client.get_connection().ok()
    });

    // A plain Redis only to satisfy the harness; the controller is pointed at the TLS one.
    let plain = Redis::start();
    let ca = cert.display().to_string();
    let opts = ControllerOpts {
        redis: Some(url.clone()),
        extra: vec!["--redis-ca".into(), ca.clone()],
        ..Default::default()
    };
    let controller = Controller::start(&plain, opts);

    let out = Command::new(bin_dir().join("jsacc"))
        .args([
            "token",
            "add",
            "--gid",
            "1",
            "--nid",
            "1",
            "-r",
            &url,
            "--redis-ca",
            &ca,
        ])
        .output()
        .expect("token add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("token")
        .trim()
        .to_owned();
    let stored: Option<String> = redis::cmd("HGET")
        .arg("auth:agents")
        .arg("1:1")
        .query(&mut conn)
        .expect("HGET");
    assert!(stored.is_some(), "the token's hash is in the TLS Redis");

    let cmd = json!({"id": "over-tls", "gid": 1, "nid": 1, "cmd": "ping"});
    let _: i64 = redis::cmd("LPUSH")
        .arg("cmds_queue")
        .arg(cmd.to_string())
        .query(&mut conn)
        .expect("LPUSH");
    let http = controller.http();
    let resp = http
        .get(format!("{}/v1/agents/1/1/cmd?wait=10", controller.url()))
        .bearer_auth(&token)
        .send()
        .expect("poll");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert_eq!(
        resp.json::<serde_json::Value>().expect("JSON")["id"],
        "over-tls"
    );
    let _ = server.kill();
    let _ = server.wait();
}
