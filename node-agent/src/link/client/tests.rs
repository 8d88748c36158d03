#[test]
fn poll_answers_keep_each_command_as_pushed() {
    let one = r#"{"id":"a","gid":1,"nid":2,"cmd":"ping"}"#;
    assert_eq!(raw_commands(one.as_bytes()).unwrap(), [one]);
    let two = format!(" [ {one} ,\n{one}] ");
    assert_eq!(raw_commands(two.as_bytes()).unwrap(), [one, one]);
    assert!(matches!(
        raw_commands(b"42"),
        Err(ControllerError::Malformed(_))
    ));
    assert!(matches!(
        raw_commands(b"[1,"),
        Err(ControllerError::Malformed(_))
    ));
}

use super::*;

#[test]
fn statuses_map_to_errors() {
    let e = |code: u16| {
        status_error(
            StatusCode::from_u16(code).unwrap(),
            "{\"error\":\"x\"}".into(),
        )
    };
    assert!(matches!(e(401), ControllerError::Unauthorized));
    assert!(matches!(e(403), ControllerError::Forbidden));
    assert!(matches!(e(413), ControllerError::TooLarge(_)));
    let too_large = status_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        r#"{"error":"too_large","message":"request body over the limit of 4096 bytes"}"#.into(),
    );
    assert_eq!(
        too_large.to_string(),
        "413 too large: request body over the limit of 4096 bytes"
    );
    assert!(matches!(e(400), ControllerError::Rejected { .. }));
    assert!(matches!(e(404), ControllerError::Rejected { .. }));
    assert!(matches!(e(408), ControllerError::Server { .. }));
    assert!(matches!(e(429), ControllerError::Server { .. }));
    assert!(matches!(e(503), ControllerError::Server { .. }));
    assert!(matches!(e(500), ControllerError::Server { .. }));
    assert!(e(400).to_string().contains("\"error\":\"x\""));
}

#[test]
fn long_bodies_are_cut_on_a_char_boundary() {
    let cut = excerpt("é".repeat(BODY_EXCERPT));
    assert!(cut.len() <= BODY_EXCERPT + '…'.len_utf8());
    assert!(cut.ends_with('…'));
}

#[test]
fn paths_are_under_the_agent() {
    let flags = crate::config::Flags {
        controller: Some("http://localhost:4000/prefix".into()),
        gid: Some(1),
        nid: Some(5),
        ..Default::default()
    };
    let config = Config::resolve(flags, Default::default(), Some("t".into()), "/".into()).unwrap();
    let c = Controller::new(&config).unwrap();
    assert_eq!(
        c.cmd_url.as_str(),
        "http://localhost:4000/prefix/v1/agents/1/5/cmd"
    );
}

#[test]
fn hello_names_this_build() {
    let hello = local_hello(&["web".into()]);
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.os, std::env::consts::OS);
    assert_eq!(hello.roles, ["web"]);
}

/// Accepts connections on `listener`; records each request's head (request line and
/// headers), then answers `answer`.
async fn serve(
    listener: tokio::net::TcpListener,
    answer: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut socket, _)) = listener.accept().await {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        // Recorded before answering: once the client has its answer, this is visible.
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).into_owned());
        let _ = socket.write_all(answer.as_bytes()).await;
    }
}

/// Issue 10 item 12: reqwest followed redirects, and a redirect to the same host keeps the
/// Authorization header (to plain http:// too). The agent follows none.
#[tokio::test]
async fn a_redirect_is_not_followed_and_says_why() {
    use std::sync::{Arc, Mutex};
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_url = format!("http://127.0.0.1:{}", first.local_addr().unwrap().port());
    let target = format!(
        "http://127.0.0.1:{}/v1/agents/1/5/hello",
        second.local_addr().unwrap().port()
    );
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
    );
    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\
                  Connection: close\r\n\r\n{\"lease\":1}";
    let at_first = Arc::new(Mutex::new(Vec::new()));
    let at_second = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(serve(first, redirect, at_first.clone()));
    tokio::spawn(serve(second, ok.to_owned(), at_second.clone()));

    let flags = crate::config::Flags {
        controller: Some(first_url),
        gid: Some(1),
        nid: Some(5),
        ..Default::default()
    };
    let config =
        Config::resolve(flags, Default::default(), Some("s3cret".into()), "/".into()).unwrap();
    let controller = Controller::new(&config).unwrap();
    let err = controller.hello(&local_hello(&[])).await.unwrap_err();

    let asked = at_first.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(asked[0]
        .to_ascii_lowercase()
        .contains("authorization: bearer s3cret"));
    let followed = at_second.lock().unwrap().clone();
    assert!(
        followed.is_empty(),
        "the redirect was followed: {followed:?}"
    );
    assert!(
        matches!(&err, ControllerError::Redirected { status, location }
                if status.as_u16() == 307 && *location == target),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("redirect") && text.contains(&target) && text.contains("token"),
        "{text}"
    );
}

/// A failed handshake is told apart from a network error, with what to do: here an https
/// URL for a server answering plain http (the error is nested in two `io::Error`s).
#[tokio::test]
async fn a_tls_failure_is_an_error_saying_what_to_do() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", plain.local_addr().unwrap().port());
    // A plain HTTP server: the ClientHello is a bad request to it.
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = plain.accept().await {
            let _ = socket.read(&mut [0u8; 4096]).await;
            let answer = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    let dir = std::env::temp_dir().join(format!("jsagent-tls-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let flags = crate::config::Flags {
        controller: Some(url),
        gid: Some(1),
        nid: Some(5),
        ca_cert: Some(ca),
        ..Default::default()
    };
    let config = Config::resolve(flags, Default::default(), Some("t".into()), "/".into()).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    let err = Controller::new(&config)
        .unwrap()
        .hello(&local_hello(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, ControllerError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("did not answer in TLS") && text.contains("http://"),
        "{text}"
    );
}

#[test]
fn hello_answers_with_and_without_roles_and_warnings_parse() {
    let old: HelloAnswer = serde_json::from_str(r#"{"lease": 30, "server_time": 1}"#).unwrap();
    assert_eq!(
        old,
        HelloAnswer {
            lease: 30,
            server_time: 1,
            ..Default::default()
        }
    );
    let new: HelloAnswer = serde_json::from_str(
            r#"{"lease": 30, "roles": ["web"], "warnings": ["role `db` claimed but not granted"], "later": {}}"#,
        )
        .unwrap();
    assert_eq!(new.roles.as_deref(), Some(&["web".to_owned()][..]));
    assert_eq!(new.warnings, ["role `db` claimed but not granted"]);
}

/// A writer into a shared buffer, for reading what was logged.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_warning_of_the_hello_answer_is_logged_at_warn() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let answer = HelloAnswer {
        lease: 30,
        roles: Some(vec!["web".into()]),
        warnings: vec!["role `db` claimed but not granted".into(), "second".into()],
        ..Default::default()
    };
    tracing::subscriber::with_default(subscriber, || log_hello(&answer));
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warns: Vec<&str> = logged.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warns.len(), 2, "{logged}");
    assert!(
        warns[0].contains("role `db` claimed but not granted"),
        "{logged}"
    );
    assert!(warns[1].contains("second"), "{logged}");
}
