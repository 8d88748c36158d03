//! `POST /v1/enroll` of the `main` controller, the one route that reads a body without a token:
//! bodies over its 4 KiB limit (declared or not), bodies that stop, bad JSON, wrong shapes and
//! codes nobody made. None may enroll anything.

use std::io::Write;

use tests::raw_http::{chunked, connect, read_response, request, send, Outcome, ANSWER_WITHIN};

use super::http::addr;
use super::{case, error, refused, Case, Seen, World};

const PATH: &str = "/v1/enroll";

fn post(w: &World, body: &[u8]) -> Outcome {
    let headers = [("Content-Type", "application/json")];
    send(addr(w), &request("POST", PATH, &headers, body))
}

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let refusals: [(&str, &[u8], u16, &str); 9] = [
        (
            "an unknown code",
            br#"{"code": "jse_0123456789abcdef0123456789abcdef01234567"}"#,
            403,
            "unknown_code",
        ),
        (
            "a guessed token as the code",
            br#"{"code": "jsa_00"}"#,
            403,
            "unknown_code",
        ),
        ("an empty code", br#"{"code": ""}"#, 400, "bad_request"),
        ("no code", br#"{"hostname": "h"}"#, 400, "bad_request"),
        ("bad JSON", b"{\"code\": ", 400, "bad_request"),
        (
            "JSON of the wrong type",
            b"[\"jse_00\"]",
            400,
            "bad_request",
        ),
        (
            "a nid no field holds",
            br#"{"code": "x", "nid": 18446744073709551616}"#,
            400,
            "bad_request",
        ),
        (
            "an unknown field",
            br#"{"code": "x", "gid": 1}"#,
            400,
            "bad_request",
        ),
        (
            "a control character in the hostname",
            b"{\"code\": \"x\", \"hostname\": \"a\\u0000b\"}",
            400,
            "bad_request",
        ),
    ];
    for (name, body, status, code) in refusals {
        cases.push(case(format!("enroll: {name}"), move |w| {
            error(&post(w, body), status, code)
        }));
    }
    cases.push(case("enroll: a code of 100 KiB", |w| {
        let body = format!(r#"{{"code": "{}"}}"#, "a".repeat(100 << 10));
        error(&post(w, body.as_bytes()), 413, "too_large")
    }));
    cases.push(case("enroll: a declared length of 1 GiB, no body", |w| {
        let headers = [("Content-Length", "1073741824")];
        let mut stream = connect(addr(w));
        let _ = stream.write_all(&request("POST", PATH, &headers, b""));
        let o = read_response(&mut stream, ANSWER_WITHIN);
        error(&o, 413, "too_large").or_else(|_| refused(&o, &[413]))
    }));
    cases.push(case("enroll: 64 KiB chunked, no length declared", |w| {
        let headers = [("Transfer-Encoding", "chunked")];
        let mut bytes = request("POST", PATH, &headers, b"");
        bytes.extend_from_slice(&chunked(&vec![b'a'; 64 << 10], 4096));
        error(&send(addr(w), &bytes), 413, "too_large")
    }));
    cases.push(case(
        "enroll: a body that stops (--body-timeout 2)",
        stopped_body,
    ));
    cases
}

/// A body promised and never sent: answered 400 (or closed) at `--body-timeout`.
fn stopped_body(w: &World) -> Seen {
    let headers = [("Content-Length", "1000")];
    let mut stream = connect(addr(w));
    let mut bytes = request("POST", PATH, &headers, b"");
    bytes.extend_from_slice(b"{\"code\": \"jse_");
    let _ = stream.write_all(&bytes);
    match read_response(&mut stream, ANSWER_WITHIN) {
        o @ Outcome::Answered(_) => error(&o, 400, "bad_request"),
        o @ Outcome::Closed { .. } => Ok(o.summary()),
        o @ Outcome::Open { .. } => Err(o.summary()),
    }
}
