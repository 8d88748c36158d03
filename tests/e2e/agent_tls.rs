//! The agent's link to the controller (issue 10, items 12 and 14): a certificate made the usual
//! way (`openssl req -x509`, which marks it `CA:TRUE`) works as the agent's `ca_cert`; a wrong
//! one is logged with what to do; a bad `ca_cert` or a plain-http controller off this machine is
//! refused at start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{bin_dir, execute, free_port, wait_for, Proc, Redis};

const T: Duration = Duration::from_secs(60);

/// Waits for `p` to exit; its code.
fn exit_code(p: &mut Proc) -> Option<i32> {
    wait_for("the process to exit", T, || p.exited()).code()
}

/// A self-signed certificate for localhost and 127.0.0.1 marked `CA:TRUE`, as `openssl req -x509`
/// makes it (rcgen with the same marks where openssl is missing). Returns (cert, key).
fn ca_marked_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509");
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("CA:TRUE"),
            "openssl made no CA:TRUE certificate:\n{text}"
        );
    } else {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let signing = rcgen::KeyPair::generate().expect("key");
        let made = params.self_signed(&signing).expect("certificate");
        std::fs::write(&cert, made.pem()).expect("write certificate");
        std::fs::write(&key, signing.serialize_pem()).expect("write key");
    }
    (cert, key)
}

/// `jsacc` on `redis`, serving `cert`.
fn controller(redis: &Redis, dir: &Path, port: u16, cert: &Path, key: &Path) -> Proc {
    let mut cmd = Command::new(bin_dir().join("jsacc"));
    cmd.args(["--bind", "127.0.0.1", "-p", &port.to_string()])
        .args(redis.jsacc_args())
        .arg("--data-dir")
        .arg(dir.join("jsacc-data"))
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("JSACC_LOG", "info");
    Proc::spawn(cmd, dir.join("jsacc.log"))
}

/// `jsagent` with a token file holding `token` and the given flags.
fn agent(dir: &Path, name: &str, token: &str, flags: &[&str]) -> Proc {
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, token).expect("token file");
    let mut cmd = Command::new(bin_dir().join("jsagent"));
    cmd.args(flags)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--data-dir")
        .arg(dir.join(format!("{name}-data")))
        .env("JSAGENT_LOG", "info,node_agent=debug");
    Proc::spawn(cmd, dir.join(format!("{name}.log")))
}

/// Issue 10 item 14: given the controller's own CA:TRUE certificate as `ca_cert`, the agent
/// failed every handshake with `CaUsedAsEndEntity` and retried for ever. Beside it, an agent
/// given another such certificate is refused, and its log says what to do.
#[test]
fn a_ca_marked_self_signed_certificate_given_as_ca_cert_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca_marked_certificate(dir.path(), "controller");
    let (stranger, _) = ca_marked_certificate(dir.path(), "stranger");
    let redis = Redis::start();
    let client = redis.client();
    let port = free_port();
    let jsacc = controller(&redis, dir.path(), port, &cert, &key);
    let url = format!("https://127.0.0.1:{port}");
    let ids =
        |nid: &'static str| ["--controller", &url, "--gid", "1", "--nid", nid].map(String::from);
    let cert_s = cert.display().to_string();
    let stranger_s = stranger.display().to_string();

    let good_flags = [&ids("1")[..], &["--ca-cert".into(), cert_s]].concat();
    let good_flags: Vec<&str> = good_flags.iter().map(String::as_str).collect();
    let good = agent(dir.path(), "good", &redis.token_add(1, 1), &good_flags);
    let bad_flags = [&ids("2")[..], &["--ca-cert".into(), stranger_s]].concat();
    let bad_flags: Vec<&str> = bad_flags.iter().map(String::as_str).collect();
    let bad = agent(dir.path(), "bad", &redis.token_add(1, 2), &bad_flags);

    let logs = || {
        format!(
            "--- jsacc ---\n{}\n--- good agent ---\n{}\n--- bad agent ---\n{}",
            jsacc.output(),
            good.output(),
            bad.output()
        )
    };
    let start = std::time::Instant::now();
    while !client.online(1, 1) {
        assert!(start.elapsed() < T, "the agent is not online:\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = client.run(&execute(1, 1, "echo", &["over tls"]), T);
    assert_eq!(r["state"].as_str(), Some("OK"), "{r}\n{}", logs());
    assert_eq!(r["streams"][0].as_str(), Some("over tls\n"));
    assert!(!good.output().contains("CaUsedAsEndEntity"), "{}", logs());

    let start = std::time::Instant::now();
    while !bad
        .output()
        .contains("TLS handshake with the controller failed")
    {
        assert!(
            start.elapsed() < T,
            "the refused agent's log does not say why:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let said = bad.output();
    assert!(said.contains("ERROR"), "{said}");
    assert!(said.contains("ca_cert"), "what to do is said: {said}");
    assert!(!client.online(1, 2), "{}", logs());
}

/// A `ca_cert` the agent cannot use is a configuration error at start (exit 2), saying what
/// to give instead; it does not poll in a loop that can never succeed.
#[test]
fn an_unusable_ca_cert_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key) = ca_marked_certificate(dir.path(), "c");
    let missing = dir.path().join("missing.pem");
    for (name, ca_cert, says) in [
        ("missing", &missing, "cannot read ca_cert"),
        ("key", &key, "no certificate in ca_cert"),
    ] {
        let flags = [
            "--controller",
            "https://127.0.0.1:1",
            "--gid",
            "1",
            "--nid",
            "1",
            "--ca-cert",
            &ca_cert.display().to_string(),
        ]
        .map(String::from);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut a = agent(dir.path(), name, "t0ken", &flags);
        assert_eq!(exit_code(&mut a), Some(2), "{}", a.output());
        let out = a.output();
        assert!(out.contains(says), "{out}");
        assert!(out.contains("controller's certificate"), "{out}");
    }
}

/// Issue 10 item 12: the token must not cross the network in clear unless asked for.
#[test]
fn a_plain_http_controller_off_this_machine_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = [
        "--controller",
        "http://192.0.2.1:4000",
        "--gid",
        "1",
        "--nid",
        "1",
    ];
    let mut refused = agent(dir.path(), "refused", "t0ken", &flags);
    assert_eq!(exit_code(&mut refused), Some(2), "{}", refused.output());
    let out = refused.output();
    assert!(
        out.contains("in clear") && out.contains("--insecure-http"),
        "{out}"
    );

    // Asked for: it starts (and keeps trying to reach the unreachable address).
    let insecure = agent(
        dir.path(),
        "insecure",
        "t0ken",
        &[&flags[..], &["--insecure-http"]].concat(),
    );
    wait_for("the agent to start", T, || {
        insecure.output().contains("jsagent started").then_some(())
    });
}
