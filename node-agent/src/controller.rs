//! HTTP client of the controller's agent API (DESIGN §8, docs/protocol.md): `hello`, the
//! long-poll for commands, and posting results. Trusts only the configured CA certificate and
//! sends this agent's bearer token; every non-2xx answer becomes a [`ControllerError`].

use std::time::Duration;

use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{Config, Token};
use crate::store::OutboxKind;

/// Added to a long-poll's `wait` for its request timeout, so a parked poll is not cut short.
const POLL_SLACK: Duration = Duration::from_secs(10);
/// Timeout of every other request (results may be megabytes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error body is kept for logs.
const BODY_EXCERPT: usize = 500;

/// What the agent tells the controller about itself, on start and after a reconnect.
pub use schemas::Hello;

/// This machine and agent build, started now.
pub fn local_hello(roles: &[String]) -> Hello {
    Hello {
        hostname: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        roles: roles.to_vec(),
        started: schemas::now_ms(),
    }
}

/// The controller's answer to `hello` (fields it adds later are ignored).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HelloAnswer {
    /// Seconds a delivered command may stay unacknowledged.
    #[serde(default)]
    pub lease: u64,
    /// The roles the agent's token grants (absent from older controllers).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// What the controller wants the operator to know, e.g. roles claimed but not granted.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl HelloAnswer {
    /// Logs the connection, and each warning of the controller at WARN.
    pub fn log(&self) {
        match &self.roles {
            Some(roles) => {
                tracing::info!(lease = self.lease, roles = ?roles, "connected to the controller")
            }
            None => tracing::info!(lease = self.lease, "connected to the controller"),
        }
        for warning in &self.warnings {
            tracing::warn!(%warning, "the controller warns about this agent");
        }
    }
}

/// The answer to a posted batch of results: every item is settled by it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PostOutcome {
    #[serde(default)]
    pub recorded: u64,
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub rejected: Vec<Rejected>,
}

/// One result the controller refused; it can never succeed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Rejected {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("network: {}", causes(.0))]
    Network(reqwest::Error),
    /// The TLS handshake failed: retrying cannot help until the operator fixes what `advice` says.
    #[error("TLS handshake with the controller failed: {error}; {advice}")]
    Tls { error: String, advice: &'static str },
    /// A 3xx answer: never followed, since the token would go along.
    #[error(
        "{status} redirect to `{location}` refused: the agent does not follow redirects, which \
         would carry its token along; set its controller URL to where the controller answers"
    )]
    Redirected {
        status: StatusCode,
        location: String,
    },
    #[error("401 unauthorized: the controller does not accept this agent's token")]
    Unauthorized,
    #[error("403 forbidden: the token belongs to another agent")]
    Forbidden,
    /// 413, with the controller's reason.
    #[error("413 too large: {0}")]
    TooLarge(String),
    #[error("{status} refused: {body}")]
    Rejected { status: StatusCode, body: String },
    #[error("{status} server error: {body}")]
    Server { status: StatusCode, body: String },
    #[error("unexpected answer: {0}")]
    Malformed(String),
}

impl ControllerError {
    /// Logs a failed request at the level the retry rules give it: what an operator must fix
    /// (the token, a refused request) at ERROR, passing trouble at WARN. Never logs the token.
    pub fn log(&self, action: &str, token_source: &str) {
        match self {
            ControllerError::Unauthorized | ControllerError::Forbidden => {
                tracing::error!(action, token = token_source, error = %self, "the controller refuses this agent; check its token")
            }
            ControllerError::Rejected { .. } | ControllerError::Setup(_) => {
                tracing::error!(action, error = %self, "the controller refused a request")
            }
            ControllerError::Tls { .. } | ControllerError::Redirected { .. } => {
                tracing::error!(action, error = %self, "cannot talk to the controller until this is fixed; retrying")
            }
            _ => tracing::warn!(action, error = %self, "cannot reach the controller; retrying"),
        }
    }
}

impl From<reqwest::Error> for ControllerError {
    fn from(e: reqwest::Error) -> ControllerError {
        match tls_failure(&e) {
            Some(tls) => ControllerError::Tls {
                error: tls.to_string(),
                advice: crate::tls::advice(tls),
            },
            None => ControllerError::Network(e),
        }
    }
}

/// The rustls error behind a failed request, if a TLS handshake failed. It sits in the chain of
/// sources, or inside `io::Error`s of it, nested (an `io::Error`'s `source` skips its inner error).
fn tls_failure(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = next {
        let mut inner = error;
        while let Some(io) = inner.downcast_ref::<std::io::Error>() {
            match io.get_ref() {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

/// Client of one agent's `/v1/agents/<gid>/<nid>/…` paths.
#[derive(Debug, Clone)]
pub struct Controller {
    http: reqwest::Client,
    token: Token,
    hello_url: Url,
    cmd_url: Url,
    result_url: Url,
    logs_url: Url,
    stats_url: Url,
}

impl Controller {
    pub fn new(config: &Config) -> Result<Controller, ControllerError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("jsagent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect would carry the token along, maybe off to another host or to plain http.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(trust) = &config.trust {
            let tls = trust
                .client_config()
                .map_err(|e| ControllerError::Setup(e.to_string()))?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder
            .build()
            .map_err(|e| ControllerError::Setup(e.to_string()))?;
        let url = |path: &str| {
            config
                .controller
                .join(&format!("v1/agents/{}/{}/{path}", config.gid, config.nid))
                .map_err(|e| ControllerError::Setup(format!("bad controller URL: {e}")))
        };
        Ok(Controller {
            http,
            token: config.token.clone(),
            hello_url: url("hello")?,
            cmd_url: url("cmd")?,
            result_url: url("result")?,
            logs_url: url("logs")?,
            stats_url: url("stats")?,
        })
    }

    pub async fn hello(&self, hello: &Hello) -> Result<HelloAnswer, ControllerError> {
        let response = self
            .http
            .post(self.hello_url.clone())
            .bearer_auth(self.token.secret())
            .json(hello)
            .send()
            .await?;
        let body = check(response).await?.bytes().await?;
        serde_json::from_slice(&body)
            .map_err(|e| ControllerError::Malformed(format!("hello answer: {e}")))
    }

    /// Long-polls for up to `max` commands, acknowledging `acks`. Returns each command as
    /// received (empty when the controller answered 204).
    pub async fn poll(
        &self,
        wait: Duration,
        max: usize,
        acks: &[String],
    ) -> Result<Vec<String>, ControllerError> {
        let mut url = self.cmd_url.clone();
        url.query_pairs_mut()
            .append_pair("wait", &wait.as_secs().to_string())
            .append_pair("max", &max.to_string());
        if !acks.is_empty() {
            url.query_pairs_mut().append_pair("ack", &acks.join(","));
        }
        let response = self
            .http
            .get(url)
            .bearer_auth(self.token.secret())
            .timeout(wait + POLL_SLACK)
            .send()
            .await?;
        let response = check(response).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let body = response.bytes().await?;
        raw_commands(&body)
    }

    /// Posts results (each a JSON object as text) as one array.
    pub async fn post_results(&self, results: &[&str]) -> Result<PostOutcome, ControllerError> {
        let body = self
            .post_array(&self.result_url, results)
            .await?
            .bytes()
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| ControllerError::Malformed(format!("result answer: {e}")))
    }

    /// Posts log messages or stats batches (each a JSON value as text) as one array to
    /// `…/logs` or `…/stats`. Any 2xx answer settles them all.
    pub async fn post_items(
        &self,
        kind: OutboxKind,
        items: &[&str],
    ) -> Result<(), ControllerError> {
        let url = match kind {
            OutboxKind::Result => &self.result_url,
            OutboxKind::Logs => &self.logs_url,
            OutboxKind::Stats => &self.stats_url,
        };
        self.post_array(url, items).await?;
        Ok(())
    }

    /// Posts `items` (each a JSON value as text) as one JSON array; a 2xx answer or the error.
    async fn post_array(&self, url: &Url, items: &[&str]) -> Result<Response, ControllerError> {
        let body = format!("[{}]", items.join(","));
        let response = self
            .http
            .post(url.clone())
            .bearer_auth(self.token.secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        check(response).await
    }
}

/// Passes 2xx answers through; turns the rest into errors.
async fn check(response: Response) -> Result<Response, ControllerError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
            .unwrap_or_default();
        return Err(ControllerError::Redirected {
            status,
            location: excerpt(location),
        });
    }
    let body = response.text().await.unwrap_or_default();
    Err(status_error(status, body))
}

fn status_error(status: StatusCode, body: String) -> ControllerError {
    let body = excerpt(body);
    match status {
        StatusCode::UNAUTHORIZED => ControllerError::Unauthorized,
        StatusCode::FORBIDDEN => ControllerError::Forbidden,
        StatusCode::PAYLOAD_TOO_LARGE => ControllerError::TooLarge(message_of(body)),
        // Said by proxies and load balancers of a passing state: retried, never dropped.
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            ControllerError::Server { status, body }
        }
        s if s.is_client_error() => ControllerError::Rejected { status, body },
        _ => ControllerError::Server { status, body },
    }
}

/// The `message` of a JSON error body (DESIGN §8), or the body itself.
fn message_of(body: String) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    match serde_json::from_str::<ErrorBody>(&body) {
        Ok(e) => e.message,
        Err(_) => body,
    }
}

/// An error with its causes: reqwest's own text ("error sending request") hides the reason.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn excerpt(mut body: String) -> String {
    if body.len() > BODY_EXCERPT {
        let mut end = BODY_EXCERPT;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push('…');
    }
    body
}

/// The commands of a poll answer, each as the exact JSON text the client pushed (parsed once,
/// later, by `Command::parse`): an array of them, or one object (what `max = 1` answers).
fn raw_commands(body: &[u8]) -> Result<Vec<String>, ControllerError> {
    let malformed = |e: serde_json::Error| ControllerError::Malformed(format!("poll answer: {e}"));
    let whole: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
    match whole.get().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(whole.get()).map_err(malformed)?;
            Ok(items.into_iter().map(|i| i.get().to_owned()).collect())
        }
        Some(b'{') => Ok(vec![whole.get().to_owned()]),
        _ => Err(ControllerError::Malformed(
            "poll answer is neither an array nor an object".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
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
        let config =
            Config::resolve(flags, Default::default(), Some("t".into()), "/".into()).unwrap();
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
        let config =
            Config::resolve(flags, Default::default(), Some("t".into()), "/".into()).unwrap();
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
        };
        tracing::subscriber::with_default(subscriber, || answer.log());
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let warns: Vec<&str> = logged.lines().filter(|l| l.contains(" WARN ")).collect();
        assert_eq!(warns.len(), 2, "{logged}");
        assert!(
            warns[0].contains("role `db` claimed but not granted"),
            "{logged}"
        );
        assert!(warns[1].contains("second"), "{logged}");
    }
}
