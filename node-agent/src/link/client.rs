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
pub(crate) use schemas::Hello;

/// This machine and agent build, started now.
pub(crate) fn local_hello(roles: &[String]) -> Hello {
    Hello {
        hostname: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        roles: roles.to_vec(),
        started: schemas::now_ms(),
        config_jobs: Vec::new(),
    }
}

/// The controller's answers to `hello` and to posted results: the wire types of `schemas`,
/// which the controller serializes (fields it adds later are ignored).
pub(crate) use schemas::{BatchAnswer as PostOutcome, HelloAnswer};

/// Logs the connection, and each warning of the controller at WARN.
pub(crate) fn log_hello(answer: &HelloAnswer) {
    match &answer.roles {
        Some(roles) => {
            tracing::info!(lease = answer.lease, roles = ?roles, "connected to the controller")
        }
        None => tracing::info!(lease = answer.lease, "connected to the controller"),
    }
    for warning in &answer.warnings {
        tracing::warn!(%warning, "the controller warns about this agent");
    }
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
    pub(crate) fn log(&self, action: &str, token_source: &str) {
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
                advice: crate::link::tls::advice(tls),
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
pub(crate) struct Controller {
    http: reqwest::Client,
    token: Token,
    hello_url: Url,
    cmd_url: Url,
    result_url: Url,
    logs_url: Url,
    stats_url: Url,
    output_url: Url,
}

impl Controller {
    pub(crate) fn new(config: &Config) -> Result<Controller, ControllerError> {
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
            output_url: url("output")?,
        })
    }

    pub(crate) async fn hello(&self, hello: &Hello) -> Result<HelloAnswer, ControllerError> {
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
    pub(crate) async fn poll(
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
    pub(crate) async fn post_results(
        &self,
        results: &[&str],
    ) -> Result<PostOutcome, ControllerError> {
        let body = self
            .post_array(&self.result_url, results)
            .await?
            .bytes()
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| ControllerError::Malformed(format!("result answer: {e}")))
    }

    /// Posts live output batches (each an [`schemas::OutputBatch`] as text) as one array to
    /// `…/output`.
    pub(crate) async fn post_output(
        &self,
        batches: &[&str],
    ) -> Result<schemas::OutputAnswer, ControllerError> {
        let url = self.url_of(OutboxKind::Output);
        let body = self.post_array(url, batches).await?.bytes().await?;
        serde_json::from_slice(&body)
            .map_err(|e| ControllerError::Malformed(format!("output answer: {e}")))
    }

    /// Posts log messages or stats batches (each a JSON value as text) as one array to
    /// `…/logs` or `…/stats`. Any 2xx answer settles them all.
    pub(crate) async fn post_items(
        &self,
        kind: OutboxKind,
        items: &[&str],
    ) -> Result<(), ControllerError> {
        self.post_array(self.url_of(kind), items).await?;
        Ok(())
    }

    /// Where rows of an outbox kind are posted.
    fn url_of(&self, kind: OutboxKind) -> &Url {
        match kind {
            OutboxKind::Result => &self.result_url,
            OutboxKind::Logs => &self.logs_url,
            OutboxKind::Stats => &self.stats_url,
            OutboxKind::Output => &self.output_url,
        }
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
mod tests;
