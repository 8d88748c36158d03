//! The listeners themselves: TLS handshakes that are garbage or never finish (the `tls`
//! controller, `--header-timeout 2` bounds the handshake too), a flood of idle connections over
//! `--max-connections 64` (the `capped` controller, agent 1:3 behind it), and who may read
//! `/metrics` (loopback without a token; with `--metrics-token-file`, only the token).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tests::raw_http::{connect, is_closed, request, send, wait_closed, RawResponse, ANSWER_WITHIN};

use super::{case, error_response, Case, Seen, World};

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    tls(&mut cases);
    metrics(&mut cases);
    flood(&mut cases);
    cases
}

/// Writes `bytes` to the TLS port and waits for the server to close the connection.
fn tls_closes(w: &World, bytes: &[u8]) -> Seen {
    let mut stream = connect(World::addr(&w.tls));
    let _ = stream.write_all(bytes);
    match wait_closed(&mut stream, ANSWER_WITHIN) {
        Some(after) => Ok(format!("closed after {after:.1?}")),
        None => Err(format!("still open after {ANSWER_WITHIN:?}")),
    }
}

/// The first flight of a real TLS client (its ClientHello), from rustls.
fn client_hello() -> Vec<u8> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No roots: the client never gets to check the server's certificate anyway.
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("ClientHello");
    hello
}

fn tls(cases: &mut Vec<Case>) {
    cases.push(case("TLS: random bytes instead of a ClientHello", |w| {
        let bytes: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        tls_closes(w, &bytes)
    }));
    cases.push(case("TLS: a plain HTTP request on the TLS port", |w| {
        tls_closes(w, &request("GET", "/healthz", &[], b""))
    }));
    cases.push(case(
        "TLS: a connection that never starts the handshake",
        |w| tls_closes(w, b""),
    ));
    cases.push(case(
        "TLS: a record header announcing 16 KiB, then nothing",
        |w| tls_closes(w, &[0x16, 0x03, 0x01, 0x40, 0x00, 0x01]),
    ));
    cases.push(case(
        "TLS: a ClientHello, then a handshake never finished",
        |w| tls_closes(w, &client_hello()),
    ));
    cases.push(case("TLS: a ClientHello cut in half", |w| {
        let hello = client_hello();
        tls_closes(w, &hello[..hello.len() / 2])
    }));
    cases.push(case("TLS: a finished handshake, then nothing", |w| {
        let mut tls = handshake(w)?;
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        tls.sock
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("read timeout");
        while start.elapsed() < ANSWER_WITHIN {
            match tls.read(&mut buf) {
                Ok(0) => return Ok(format!("closed after {:.1?}", start.elapsed())),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Ok(format!("closed after {:.1?}", start.elapsed())),
            }
        }
        Err(format!("still open after {ANSWER_WITHIN:?}"))
    }));
    cases.push(case("TLS: still serving after all that", |w| {
        let resp = w.tls.http().get(format!("{}/healthz", w.tls.url())).send();
        match resp {
            Ok(r) if r.status() == 200 => Ok("GET /healthz over TLS: 200".into()),
            Ok(r) => Err(format!("GET /healthz over TLS: {}", r.status())),
            Err(e) => Err(format!("GET /healthz over TLS: {e}")),
        }
    }));
}

/// A TLS connection to the `tls` controller, handshake done (trusting its certificate).
fn handshake(
    w: &World,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(w.tls.cert()).map_err(|e| format!("certificate: {e}"))?;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(&pem)
        .map_err(|e| format!("certificate: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).map_err(|e| format!("certificate: {e}"))?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, connect(World::addr(&w.tls)));
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// `GET path` on the TLS controller, with `token` as the bearer if any.
fn tls_get(w: &World, path: &str, token: Option<&str>) -> Result<RawResponse, String> {
    let mut req = w.tls.http().get(format!("{}{path}", w.tls.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().map_err(|e| format!("GET {path}: {e}"))?;
    Ok(RawResponse {
        status: r.status().as_u16(),
        headers: Vec::new(),
        body: r.bytes().map_err(|e| format!("GET {path}: {e}"))?.to_vec(),
    })
}

fn metrics(cases: &mut Vec<Case>) {
    cases.push(case(
        "/metrics without a token from loopback (no --metrics-token-file)",
        |w| {
            let o = send(World::addr(&w.main), &request("GET", "/metrics", &[], b""));
            match o.response() {
                Some(r)
                    if r.status == 200 && String::from_utf8_lossy(&r.body).contains("jsacc_") =>
                {
                    Ok("200".into())
                }
                _ => Err(format!("want 200 with metrics, got {}", o.summary())),
            }
        },
    ));
    for path in ["/metrics", "/metrics/agents"] {
        cases.push(case(
            format!("{path} without the token (--metrics-token-file)"),
            move |w| error_response(&tls_get(w, path, None)?, 401, "unauthorized"),
        ));
        cases.push(case(
            format!("{path} with a wrong token (--metrics-token-file)"),
            move |w| {
                let wrong = format!("{}x", w.metrics_token);
                error_response(&tls_get(w, path, Some(&wrong))?, 401, "unauthorized")
            },
        ));
        cases.push(case(
            format!("{path} with an agent's token (--metrics-token-file)"),
            move |w| error_response(&tls_get(w, path, Some(&w.token))?, 401, "unauthorized"),
        ));
        cases.push(case(format!("{path} with the metrics token"), move |w| {
            let r = tls_get(w, path, Some(&w.metrics_token))?;
            if r.status == 200 {
                Ok("200".into())
            } else {
                Err(format!("want 200, got {}", r.summary()))
            }
        }));
    }
}

/// How many connections the flood opens; the cap is 64 and agent 1:3 holds one or two.
const FLOOD: usize = 100;
const CAP: usize = 64;

fn flood(cases: &mut Vec<Case>) {
    cases.push(case(format!("{FLOOD} idle connections over --max-connections {CAP}"), |w| {
        let addr = World::addr(&w.capped);
        let mut conns: Vec<(TcpStream, bool)> = (0..FLOOD).map(|_| (connect(addr), false)).collect();
        // Closed connections stay closed: look until enough are, or for a generous while.
        let start = Instant::now();
        let mut closed = 0;
        while closed < FLOOD - CAP && start.elapsed() < ANSWER_WITHIN {
            for (stream, seen_closed) in conns.iter_mut().filter(|(_, c)| !*c) {
                *seen_closed = is_closed(stream, Duration::from_millis(20));
            }
            closed = conns.iter().filter(|(_, c)| *c).count();
        }
        let kept = FLOOD - closed;
        let mut extra = connect(addr);
        let extra_closed = is_closed(&mut extra, Duration::from_secs(10));
        drop(conns);
        drop(extra);
        if closed < FLOOD - CAP || kept == 0 || !extra_closed {
            return Err(format!(
                "{closed} of {FLOOD} closed, {kept} kept; one more while they were held closed: {extra_closed}"
            ));
        }
        let after = serves_again(w)?;
        Ok(format!("{closed} closed at once, {kept} kept; once released: {after}"))
    }));
}

/// After a flood: `/healthz` answers again, and agent 1:3 (behind the capped controller) runs a job.
fn serves_again(w: &World) -> Result<String, String> {
    let addr = World::addr(&w.capped);
    let start = Instant::now();
    loop {
        let o = send(addr, &request("GET", "/healthz", &[], b""));
        if o.response().is_some_and(|r| r.status == 200) {
            break;
        }
        if start.elapsed() > ANSWER_WITHIN {
            return Err(format!("/healthz after the flood: {}", o.summary()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let healthz = start.elapsed();
    // The agent's retries back off up to 30 s: give it twice that.
    let ping = tests::command(1, 3, "ping", serde_json::json!({}));
    w.client.push(&ping);
    let id = ping["id"].as_str().expect("id");
    match w.client.result(id, Duration::from_secs(60)) {
        Some(r) if r["state"] == "OK" => Ok(format!(
            "/healthz after {healthz:.1?}, agent 1:3 answered a ping after {:.1?}",
            start.elapsed()
        )),
        Some(r) => Err(format!("agent 1:3's ping after the flood: {r}")),
        None => Err("agent 1:3 did not answer a ping within 60 s of the flood".into()),
    }
}
