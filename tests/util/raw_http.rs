//! HTTP/1.1 written by hand on a plain TCP socket, for tests that send what no well-behaved
//! client would: headers that never end, bodies that stop halfway, lengths that lie, bytes that
//! are not HTTP at all. A reply is read as far as it goes; what the server did with the
//! connection (answered, closed, or left it open) is the [`Outcome`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a reply may take unless a case says otherwise: generous, the machine may be busy.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A reply as read off the socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Status and the start of the body, for messages.
    pub fn summary(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        format!("{} {body}", self.status)
    }
}

/// What the server did with a connection.
#[derive(Debug)]
pub enum Outcome {
    /// It answered (and may have closed the connection after).
    Answered(RawResponse),
    /// It closed (EOF or reset) before a whole reply; `partial` is what it sent first.
    Closed { after: Duration, partial: Vec<u8> },
    /// Nothing conclusive within the limit: the connection is still open.
    Open { partial: Vec<u8> },
}

impl Outcome {
    pub fn summary(&self) -> String {
        match self {
            Outcome::Answered(r) => r.summary(),
            Outcome::Closed { after, partial } => format!(
                "closed after {after:.1?} ({} bytes first: {:?})",
                partial.len(),
                String::from_utf8_lossy(&partial[..partial.len().min(120)])
            ),
            Outcome::Open { partial } => format!(
                "still open ({} bytes received: {:?})",
                partial.len(),
                String::from_utf8_lossy(&partial[..partial.len().min(120)])
            ),
        }
    }

    pub fn response(&self) -> Option<&RawResponse> {
        match self {
            Outcome::Answered(r) => Some(r),
            _ => None,
        }
    }
}

/// A connection with read and write timeouts, so no test can hang on it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_write_timeout(Some(ANSWER_WITHIN))
        .expect("write timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// The bytes of a request: request line, `Host`, the given headers, `Connection: close`,
/// `Content-Length` of `body` unless `headers` set a length or an encoding, then `body`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let framed = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if !framed {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// `body` in chunks of `size` bytes (chunked transfer encoding), with the last chunk.
pub fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / size * 8 + 8);
    for chunk in body.chunks(size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Connects, writes `bytes` (a write the server cuts short is not an error: it may answer and
/// close before reading everything), and reads the reply.
pub fn send(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut stream = connect(addr);
    let _ = stream.write_all(bytes);
    read_response(&mut stream, ANSWER_WITHIN)
}

/// Like [`send`] for a `HEAD` request: the reply has no body, whatever its length says.
pub fn send_head(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut stream = connect(addr);
    let _ = stream.write_all(bytes);
    read_reply(&mut stream, ANSWER_WITHIN, true)
}

/// Reads one reply, waiting at most `limit` for all of it.
pub fn read_response(stream: &mut TcpStream, limit: Duration) -> Outcome {
    read_reply(stream, limit, false)
}

/// Everything the server sends until it closes the connection, for at most `limit`, and
/// whether it did close (for pipelined requests, the last of them with `Connection: close`).
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let start = Instant::now();
    let mut buf = Vec::new();
    loop {
        match read_some(stream, &mut buf, start, limit) {
            Got::More => {}
            Got::Eof => return (buf, true),
            Got::TimedOut => return (buf, false),
        }
    }
}

fn read_reply(stream: &mut TcpStream, limit: Duration, head_only: bool) -> Outcome {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut head: Option<(RawResponse, usize, Framing)> = None;
    loop {
        if head.is_none() {
            if let Some((resp, at, framing)) = parse_head(&buf) {
                let framing = if head_only {
                    Framing::Length(0)
                } else {
                    framing
                };
                head = Some((resp, at, framing));
            }
        }
        if let Some((resp, at, framing)) = &head {
            if let Some(body) = framing.complete(&buf[*at..]) {
                let mut resp = resp.clone();
                resp.body = body;
                return Outcome::Answered(resp);
            }
        }
        match read_some(stream, &mut buf, start, limit) {
            Got::More => {}
            Got::Eof => {
                // A reply without a length ends with the connection.
                if let Some((mut resp, at, Framing::UntilClose)) = head {
                    resp.body = buf[at..].to_vec();
                    return Outcome::Answered(resp);
                }
                return Outcome::Closed {
                    after: start.elapsed(),
                    partial: buf,
                };
            }
            Got::TimedOut => return Outcome::Open { partial: buf },
        }
    }
}

/// Reads and drops whatever comes until the server closes the connection, for at most `limit`:
/// how long that took, or `None` if it is still open.
pub fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut sink = Vec::new();
    loop {
        match read_some(stream, &mut sink, start, limit) {
            Got::More => sink.clear(),
            Got::Eof => return Some(start.elapsed()),
            Got::TimedOut => return None,
        }
    }
}

/// Whether the server has closed the connection, looking for at most `patience` (for
/// connections that were closed or kept some time ago).
pub fn is_closed(stream: &mut TcpStream, patience: Duration) -> bool {
    stream
        .set_read_timeout(Some(patience))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// What one read brought.
enum Got {
    /// Data, or nothing yet with time left: read on.
    More,
    /// The server closed the connection (EOF, reset).
    Eof,
    /// The limit passed.
    TimedOut,
}

fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, start: Instant, limit: Duration) -> Got {
    let left = limit.saturating_sub(start.elapsed());
    if left.is_zero() {
        return Got::TimedOut;
    }
    stream
        .set_read_timeout(Some(left.min(Duration::from_secs(1))))
        .expect("read timeout");
    let mut chunk = [0u8; 16 << 10];
    match stream.read(&mut chunk) {
        Ok(0) => Got::Eof,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Got::More
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            if start.elapsed() >= limit {
                Got::TimedOut
            } else {
                Got::More
            }
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => Got::More,
        // Reset, broken pipe: closed.
        Err(_) => Got::Eof,
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Framing {
    /// The whole body, once it is all in `data`.
    fn complete(self, data: &[u8]) -> Option<Vec<u8>> {
        match self {
            Framing::Length(n) => (data.len() >= n).then(|| data[..n].to_vec()),
            Framing::Chunked => dechunk(data),
            Framing::UntilClose => None,
        }
    }
}

/// The status line and headers, once they are all in `buf`: the reply without its body, where
/// the body starts, and how it is framed.
fn parse_head(buf: &[u8]) -> Option<(RawResponse, usize, Framing)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let framing = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        Framing::Chunked
    } else if let Some(n) = find("content-length").and_then(|v| v.parse().ok()) {
        Framing::Length(n)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    let resp = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    Some((resp, end + 4, framing))
}

/// A chunked body, once its last chunk is in `data`.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_bodies_are_framed() {
        let (r, at, f) =
            parse_head(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}").expect("head");
        assert_eq!((r.status, at), (401, 48));
        assert_eq!(f.complete(b"{}"), Some(b"{}".to_vec()));
        assert_eq!(
            dechunk(b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"),
            Some(b"abc".to_vec())
        );
        assert_eq!(dechunk(b"2\r\nab\r\n"), None);
        assert_eq!(chunked(b"abc", 2), b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
    }
}
