//! HTTP client of the controller's agent API (DESIGN §8, docs/protocol.md): `hello`, the
//! long-poll for commands, and posting results. Trusts only the configured CA certificate and
//! sends this agent's bearer token; every non-2xx answer becomes a [`ControllerError`].

use std::time::Duration;

use reqwest::{Certificate, Response, StatusCode, Url};
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

/// The controller's answer to `hello`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HelloAnswer {
    /// Seconds a delivered command may stay unacknowledged.
    #[serde(default)]
    pub lease: u64,
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
    Network(#[from] reqwest::Error),
    #[error("401 unauthorized: the controller does not accept this agent's token")]
    Unauthorized,
    #[error("403 forbidden: the token belongs to another agent")]
    Forbidden,
    #[error("413 too large")]
    TooLarge,
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
            _ => tracing::warn!(action, error = %self, "cannot reach the controller; retrying"),
        }
    }
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
            .timeout(REQUEST_TIMEOUT);
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                ControllerError::Setup(format!(
                    "cannot read CA certificate {}: {e}",
                    path.display()
                ))
            })?;
            let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
                ControllerError::Setup(format!("bad CA certificate {}: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(ControllerError::Setup(format!(
                    "no certificate in {}",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
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
    let body = response.text().await.unwrap_or_default();
    Err(status_error(status, body))
}

fn status_error(status: StatusCode, body: String) -> ControllerError {
    let body = excerpt(body);
    match status {
        StatusCode::UNAUTHORIZED => ControllerError::Unauthorized,
        StatusCode::FORBIDDEN => ControllerError::Forbidden,
        StatusCode::PAYLOAD_TOO_LARGE => ControllerError::TooLarge,
        // Said by proxies and load balancers of a passing state: retried, never dropped.
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            ControllerError::Server { status, body }
        }
        s if s.is_client_error() => ControllerError::Rejected { status, body },
        _ => ControllerError::Server { status, body },
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
        assert!(matches!(e(413), ControllerError::TooLarge));
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
            controller: Some("http://c:4000/prefix".into()),
            gid: Some(1),
            nid: Some(5),
            ..Default::default()
        };
        let config =
            Config::resolve(flags, Default::default(), Some("t".into()), "/".into()).unwrap();
        let c = Controller::new(&config).unwrap();
        assert_eq!(c.cmd_url.as_str(), "http://c:4000/prefix/v1/agents/1/5/cmd");
    }

    #[test]
    fn hello_names_this_build() {
        let hello = local_hello(&["web".into()]);
        assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(hello.os, std::env::consts::OS);
        assert_eq!(hello.roles, ["web"]);
    }
}
