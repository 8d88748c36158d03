//! The HTTP layer of the `main` controller (plain HTTP, `--header-timeout 2 --body-timeout 2
//! --max-stats-body 65536`), over raw TCP: wrong methods and paths, oversized and endless
//! heads, bodies that lie about their length, stop, or are over a limit, and bytes that are
//! not HTTP at all. The helpers here serve [`super::api`] too.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::raw_http::{
    chunked, connect, is_closed, read_response, request, send, send_head, wait_closed, Outcome,
    ANSWER_WITHIN,
};

use super::{case, error, refused, Case, Seen, World};

/// Paths of agent 9:1, whose token the cases hold; no process polls as 9:1.
const ME: &str = "/v1/agents/9/1";

pub(super) fn addr(w: &World) -> SocketAddr {
    World::addr(&w.main)
}

pub(super) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A request of agent 9:1 with its valid token.
pub(super) fn as_me(w: &World, method: &str, what: &str, body: &[u8]) -> Outcome {
    let auth = bearer(&w.token);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    send(
        addr(w),
        &request(method, &format!("{ME}/{what}"), &headers, body),
    )
}

/// Only the head of a request (no body), then the reply.
fn head_only(w: &World, method: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
    let mut stream = connect(addr(w));
    let _ = stream.write_all(&request(method, path, headers, b""));
    read_response(&mut stream, ANSWER_WITHIN)
}

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    wrong_methods(&mut cases);
    unknown_paths(&mut cases);
    oversized_heads(&mut cases);
    slow_clients(&mut cases);
    body_limits(&mut cases);
    framing(&mut cases);
    not_http(&mut cases);
    cases
}

/// Every route, with the one method it serves.
const ROUTES: &[(&str, &str)] = &[
    ("/v1/agents/9/1/hello", "POST"),
    ("/v1/agents/9/1/cmd", "GET"),
    ("/v1/agents/9/1/result", "POST"),
    ("/v1/agents/9/1/logs", "POST"),
    ("/v1/agents/9/1/stats", "POST"),
    ("/metrics", "GET"),
    ("/metrics/agents", "GET"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
];

fn wrong_methods(cases: &mut Vec<Case>) {
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW",
    ];
    for &(path, allowed) in ROUTES {
        for method in methods.into_iter().filter(|m| *m != allowed) {
            cases.push(case(format!("wrong method: {method} {path}"), move |w| {
                let auth = bearer(&w.token);
                let o = send(
                    addr(w),
                    &request(method, path, &[("Authorization", &auth)], b""),
                );
                error(&o, 405, "method_not_allowed")
            }));
        }
        if allowed == "POST" {
            cases.push(case(format!("wrong method: HEAD {path}"), move |w| {
                let auth = bearer(&w.token);
                let o = send_head(
                    addr(w),
                    &request("HEAD", path, &[("Authorization", &auth)], b""),
                );
                match o.response() {
                    Some(r) if r.status == 405 => Ok("405".into()),
                    _ => Err(format!("want 405, got {}", o.summary())),
                }
            }));
        }
    }
}

fn unknown_paths(cases: &mut Vec<Case>) {
    let paths = [
        "/",
        "/v1",
        "/v1/agents/9",
        "/v1/agents/9/1/",
        "/v1/agents/9/1/nothing",
        "/v1/agents/9/1/cmd/more",
        "/v1/agents/9/1/CMD",
        "/v1/agents/9/1/9/cmd",
        "/v2/agents/9/1/cmd",
        "//v1/agents/9/1/cmd",
        "/healthz/",
        "/metricsx",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v1/agents/9/1/cmd%00",
        "/.env",
        "/favicon.ico",
    ];
    for path in paths {
        cases.push(case(format!("unknown path: GET {path}"), move |w| {
            let auth = bearer(&w.token);
            let o = send(
                addr(w),
                &request("GET", path, &[("Authorization", &auth)], b""),
            );
            error(&o, 404, "not_found")
        }));
    }
    // The operator API's paths: an agent's token does not open them.
    for path in [
        "/v1/agents",
        "/v1/agents/9/1",
        "/v1/jobs",
        "/v1/me",
        "/v1/users",
    ] {
        cases.push(case(
            format!("operator path with an agent token: GET {path}"),
            move |w| {
                let auth = bearer(&w.token);
                let o = send(
                    addr(w),
                    &request("GET", path, &[("Authorization", &auth)], b""),
                );
                error(&o, 401, "unauthorized")
            },
        ));
    }
    cases.push(case("unknown path: a 70 KB URI", |w| {
        let path = format!("/{}", "a".repeat(70_000));
        let o = send(addr(w), &request("GET", &path, &[], b""));
        match o.response() {
            Some(r) if r.status == 404 => error(&o, 404, "not_found"),
            _ => refused(&o, &[400, 414, 431]),
        }
    }));
}

fn oversized_heads(cases: &mut Vec<Case>) {
    cases.push(case("a 1 MiB header", |w| {
        let big = "a".repeat(1 << 20);
        refused(
            &send(
                addr(w),
                &request("GET", "/healthz", &[("X-Big", &big)], b""),
            ),
            &[431, 400, 413],
        )
    }));
    cases.push(case("2000 headers", |w| {
        let names: Vec<String> = (0..2000).map(|i| format!("X-H-{i}")).collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        refused(
            &send(addr(w), &request("GET", "/healthz", &headers, b"")),
            &[431, 400],
        )
    }));
    cases.push(case("a 1 MiB bearer token", |w| {
        let auth = format!("Bearer jsa_{}", "a".repeat(1 << 20));
        let o = send(
            addr(w),
            &request(
                "GET",
                &format!("{ME}/cmd?wait=0"),
                &[("Authorization", &auth)],
                b"",
            ),
        );
        match o.response() {
            Some(r) if r.status == 401 => error(&o, 401, "unauthorized"),
            _ => refused(&o, &[431, 400]),
        }
    }));
    cases.push(case("a header line without a colon", |w| {
        refused(
            &send(
                addr(w),
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
            ),
            &[400],
        )
    }));
    cases.push(case("a header name with a NUL byte", |w| {
        refused(
            &send(
                addr(w),
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-\0: v\r\n\r\n",
            ),
            &[400],
        )
    }));
}

/// Clients that start a request and never finish it: `--header-timeout 2` and
/// `--body-timeout 2` must end them; a generous bound, never a tight one.
fn slow_clients(cases: &mut Vec<Case>) {
    let stalls: [(&str, &[u8]); 4] = [
        ("a connection that sends nothing", b""),
        ("the first byte of the HTTP/2 preface, then nothing", b"P"),
        ("a request line that never ends", b"GET /heal"),
        (
            "headers that never end",
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
        ),
    ];
    for (name, bytes) in stalls {
        cases.push(case(name, move |w| {
            let mut stream = connect(addr(w));
            let _ = stream.write_all(bytes);
            closed_within(&mut stream)
        }));
    }
    cases.push(case(
        "headers trickled a byte every 300 ms (slowloris)",
        |w| {
            let mut stream = connect(addr(w));
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            let start = Instant::now();
            while start.elapsed() < ANSWER_WITHIN {
                if stream.write_all(b"X").is_err()
                    || is_closed(&mut stream, Duration::from_millis(300))
                {
                    return Ok(format!("closed after {:.1?}", start.elapsed()));
                }
            }
            Err(format!("still open after {ANSWER_WITHIN:?}"))
        },
    ));
    let halves: [(&str, &str, &[u8]); 2] = [
        (
            "a body that stops halfway",
            "Content-Length",
            b"{\"id\": \"half\", \"gid\": 9, \"nid\": 1, \"cmd",
        ),
        (
            "a chunked body that stops halfway",
            "Transfer-Encoding",
            b"100\r\n{\"id\": \"half\"",
        ),
    ];
    for (name, framing, bytes) in halves {
        cases.push(case(format!("{name} (--body-timeout 2)"), move |w| {
            let auth = bearer(&w.token);
            let value = if framing == "Content-Length" {
                "1000"
            } else {
                "chunked"
            };
            let headers = [("Authorization", auth.as_str()), (framing, value)];
            let mut stream = connect(addr(w));
            let mut bytes_out = request("POST", &format!("{ME}/result"), &headers, b"");
            bytes_out.extend_from_slice(bytes);
            let _ = stream.write_all(&bytes_out);
            match read_response(&mut stream, ANSWER_WITHIN) {
                o @ Outcome::Answered(_) => {
                    let status = o.response().map(|r| r.status).unwrap_or(0);
                    if status == 408 || status == 400 {
                        let code = o
                            .response()
                            .and_then(|r| r.json())
                            .map(|v| v["error"].clone());
                        match code {
                            Some(Value::String(c)) => error(&o, status, &c),
                            _ => Err(format!("no JSON error: {}", o.summary())),
                        }
                    } else {
                        Err(format!("want 408 or 400 or a close, got {}", o.summary()))
                    }
                }
                o @ Outcome::Closed { .. } => Ok(o.summary()),
                o @ Outcome::Open { .. } => Err(o.summary()),
            }
        }));
    }
}

/// Waits for the server to close the connection (reading whatever it sends first).
fn closed_within(stream: &mut std::net::TcpStream) -> Seen {
    match wait_closed(stream, ANSWER_WITHIN) {
        Some(after) => Ok(format!("closed after {after:.1?}")),
        None => Err(format!("still open after {ANSWER_WITHIN:?}")),
    }
}

/// The `Authorization` a case sends (`None`: no header).
type AuthOf = fn(&World) -> Option<String>;

fn body_limits(cases: &mut Vec<Case>) {
    // Headers only: the answer must come before any of the body is sent.
    let strangers: [(&str, AuthOf, u16, &str); 3] = [
        (
            "a bad token",
            |_| Some("Bearer jsa_not_a_token".into()),
            401,
            "unauthorized",
        ),
        ("no token", |_| None, 401, "unauthorized"),
        (
            "another agent's token",
            |w| Some(bearer(&w.other_token)),
            403,
            "forbidden",
        ),
    ];
    for (who, auth, status, code) in strangers {
        cases.push(case(
            format!("a 15 MB result with {who}: refused before the body"),
            move |w| {
                let auth = auth(w);
                let mut headers = vec![("Content-Length", "15000000")];
                if let Some(a) = &auth {
                    headers.push(("Authorization", a.as_str()));
                }
                error(
                    &head_only(w, "POST", &format!("{ME}/result"), &headers),
                    status,
                    code,
                )
            },
        ));
    }
    let declared = [
        ("hello", "POST", 65_537u64),
        ("result", "POST", (16 << 20) + 1),
        ("logs", "POST", (16 << 20) + 1),
        ("stats", "POST", 65_537),
        ("cmd?wait=0", "GET", 4097),
    ];
    for (what, method, length) in declared {
        cases.push(case(
            format!("declared length over the limit: {method} {what} of {length} bytes"),
            move |w| {
                let (auth, length) = (bearer(&w.token), length.to_string());
                let headers = [
                    ("Authorization", auth.as_str()),
                    ("Content-Length", length.as_str()),
                ];
                error(
                    &head_only(w, method, &format!("{ME}/{what}"), &headers),
                    413,
                    "too_large",
                )
            },
        ));
    }
    cases.push(case("declared length of 1 TB without a token", |w| {
        // Either refusal comes before the body; which one first is the controller's choice.
        let o = head_only(
            w,
            "POST",
            &format!("{ME}/hello"),
            &[("Content-Length", "1000000000000")],
        );
        error(&o, 413, "too_large").or_else(|_| error(&o, 401, "unauthorized"))
    }));
    // As an agent sends a body (hyper's client: it stops writing when the answer comes, or
    // fails when the server closes first), the 413 must reach it: it splits a batch on a 413
    // and retries on a network error.
    for (what, size) in [("stats", 2usize << 20), ("hello", 1 << 20)] {
        cases.push(case(
            format!("a {} MiB {what} posted like an agent posts it", size >> 20),
            move |w| {
                let body = format!("[{}]", "0,".repeat(size / 2) + "0");
                let resp = w
                    .main
                    .http()
                    .post(format!("{}{ME}/{what}", w.main.url()))
                    .bearer_auth(&w.token)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .map_err(|e| format!("want 413 too_large, got a network error: {e:?}"))?;
                let status = resp.status().as_u16();
                let body = resp
                    .bytes()
                    .map_err(|e| format!("{status}, then {e}"))?
                    .to_vec();
                let r = tests::raw_http::RawResponse {
                    status,
                    headers: Vec::new(),
                    body,
                };
                super::error_response(&r, 413, "too_large")
            },
        ));
    }
    for (what, size) in [("hello", 80 << 10), ("stats", 100 << 10)] {
        cases.push(case(
            format!("a chunked {what} of {} KiB (over its limit)", size >> 10),
            move |w| {
                let auth = bearer(&w.token);
                let headers = [
                    ("Authorization", auth.as_str()),
                    ("Transfer-Encoding", "chunked"),
                ];
                let body = format!("{{\"hostname\": \"{}\"}}", "x".repeat(size));
                let mut bytes = request("POST", &format!("{ME}/{what}"), &headers, b"");
                bytes.extend_from_slice(&chunked(body.as_bytes(), 8 << 10));
                error(&send(addr(w), &bytes), 413, "too_large")
            },
        ));
    }
}

/// Lengths and encodings that lie or cannot be parsed: the HTTP layer refuses them.
fn framing(cases: &mut Vec<Case>) {
    let lengths = ["-1", "abc", "1e3", "99999999999999999999999", "5 5", "0x10"];
    for length in lengths {
        cases.push(case(format!("Content-Length: {length}"), move |w| {
            let auth = bearer(&w.token);
            let headers = [("Authorization", auth.as_str()), ("Content-Length", length)];
            let bytes = request("POST", &format!("{ME}/result"), &headers, b"{}");
            refused(&send(addr(w), &bytes), &[400])
        }));
    }
    let raw: [(&str, &[u8]); 6] = [
        (
            "two different Content-Lengths",
            b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        ),
        (
            "a chunk size that is not hex",
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "a chunk size over 2^64",
            b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n{}",
        ),
        (
            "Content-Length and chunked together",
            b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding: gzip",
            b"Transfer-Encoding: gzip\r\n\r\n{}",
        ),
        (
            "a chunk longer than its size",
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}}}}}\r\n0\r\n\r\n",
        ),
    ];
    for (name, tail) in raw {
        cases.push(case(name, move |w| {
            let mut bytes = format!(
                "POST {ME}/result HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
                w.token
            )
            .into_bytes();
            bytes.extend_from_slice(tail);
            refused(&send(addr(w), &bytes), &[400, 501])
        }));
    }
    cases.push(case("HTTP version 3.0 on HTTP/1", |w| {
        refused(
            &send(addr(w), b"GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n"),
            &[400, 505],
        )
    }));
}

fn not_http(cases: &mut Vec<Case>) {
    cases.push(case("4 KiB of random bytes instead of HTTP", |w| {
        let mut rng = Rng::new();
        let bytes: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        refused(&send(addr(w), &bytes), &[400])
    }));
    cases.push(case("1 KiB of NUL bytes", |w| {
        refused(&send(addr(w), &[0u8; 1024]), &[400])
    }));
    cases.push(case("HTTP/0.9 request", |w| {
        refused(&send(addr(w), b"GET /healthz\r\n\r\n"), &[400, 505])
    }));
    cases.push(case("HTTP/2 preface then garbage frames", |w| {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[0xff; 64]);
        refused(&send(addr(w), &bytes), &[400])
    }));
    cases.push(case("a TLS ClientHello on the plain-HTTP port", |w| {
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
        ];
        hello.extend_from_slice(&[0x42; 60]);
        refused(&send(addr(w), &hello), &[400])
    }));
    cases.push(case("200 connections opened and closed at once", |w| {
        for _ in 0..200 {
            drop(connect(addr(w)));
        }
        let o = send(addr(w), &request("GET", "/healthz", &[], b""));
        match o.response() {
            Some(r) if r.status == 200 => Ok("then /healthz answers 200".into()),
            _ => Err(format!("then /healthz: {}", o.summary())),
        }
    }));
}

/// A small deterministic generator (xorshift), seeded at random: no extra dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn new() -> Rng {
        Rng(uuid::Uuid::new_v4().as_u64_pair().0 | 1)
    }
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
