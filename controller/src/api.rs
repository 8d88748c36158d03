//! The HTTP API (DESIGN §8, docs/protocol.md): agent endpoints behind bearer tokens, operator
//! endpoints without (`/metrics*` from loopback or with the metrics token). [`app`] builds the
//! router, so tests can drive it without a network.
//!
//! An agent request's token is checked before its body is read ([`authenticate`]), so a
//! stranger cannot make the controller read or hold a body; each route has its own body limit,
//! and a body must arrive within `--body-timeout`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use schemas::JobResult;

use crate::agents::{self, Hello};
use crate::auth::Verdict;
use crate::keys;
use crate::poll::{self, PollRequest};
use crate::results::{self, BatchAnswer, Outcome};
use crate::state::AppState;
use crate::stats;

/// An error answer: `{"error": code, "message": text}` with its status.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AppError {
    /// The error's code (`"bad_request"`, `"mismatched_agent"`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// A body names another agent than its path.
    pub(crate) fn mismatched_agent(named: (u64, u64), path: (u64, u64)) -> AppError {
        let message = format!(
            "the body names agent {}:{} but was posted as {}:{}",
            named.0, named.1, path.0, path.1
        );
        AppError::new(StatusCode::BAD_REQUEST, "mismatched_agent", message)
    }

    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> AppError {
        if crate::state::is_not_replicated(&e) {
            // Expected during a replica's outage or a failover; the agent retries.
            tracing::warn!(error = %e, "write not confirmed by enough replicas; answered 503");
            return AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_replicated",
                format!("redis did not replicate the write in time ({e}); retry later"),
            );
        }
        tracing::error!(error = %e, "redis request failed");
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "redis is unreachable; retry later",
        )
    }
}

impl From<BytesRejection> for AppError {
    fn from(r: BytesRejection) -> AppError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "request body over the size limit",
            )
        } else {
            AppError::bad_request(r.body_text())
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

/// Everything the handlers need: shared state and the shutdown signal that releases long-polls.
#[derive(Clone)]
pub struct Api {
    pub state: AppState,
    pub shutdown: CancellationToken,
}

/// Largest hello body: a few short facts and a list of roles.
pub const HELLO_MAX_BODY: usize = 64 << 10;
/// Largest body of a request that needs none (a poll, an operator's GET).
pub const NO_BODY: usize = 4 << 10;

pub fn app(api: Api) -> Router {
    let max_body = api.state.config.max_body;
    let stats_max = api.state.config.max_stats_body;
    let agent = Router::new()
        .route("/hello", limit(post(hello), HELLO_MAX_BODY))
        .route("/cmd", limit(get(cmd), NO_BODY))
        .route("/result", limit(post(result), max_body))
        .route("/logs", limit(post(crate::logs::post), max_body))
        .route("/stats", limit(post(stats::post), stats_max))
        .route_layer(middleware::from_fn_with_state(api.clone(), authenticate));
    let metrics_routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/agents", get(stats::metrics))
        .route_layer(middleware::from_fn_with_state(api.clone(), metrics_access));
    Router::new()
        .nest("/v1/agents/{gid}/{nid}", agent)
        .merge(metrics_routes)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            AppError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            AppError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(NO_BODY))
        // Agent routes have their own limits; nothing else takes a body.
        .layer(middleware::from_fn(|req: Request, next: Next| async move {
            match req.uri().path().starts_with("/v1/agents/") {
                true => next.run(req).await,
                false => refuse_declared(NO_BODY, false, req, next).await,
            }
        }))
        .layer(middleware::from_fn_with_state(api.clone(), observe))
        .with_state(api)
}

/// `route` (an agent route: its token was checked first) with a body limit: a declared length
/// over it is refused before the body is read, and a body without one is cut where it is read.
fn limit(route: MethodRouter<Api>, max: usize) -> MethodRouter<Api> {
    route
        .layer(DefaultBodyLimit::max(max))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            refuse_declared(max, true, req, next)
        }))
}

/// Bodies up to this size that are refused 413 are still read (and thrown away) after the
/// answer, so the agent receives the 413 and splits its batch: closing the connection with
/// unread data would reset it, and the agent would see a network error instead.
const DRAIN_MAX: u64 = 64 << 20;

/// Refuses a request whose declared body is over `max`. With `drain` (authenticated agents
/// only), a body up to [`DRAIN_MAX`] is read and thrown away after the answer, within the body
/// deadline the agent routes have.
async fn refuse_declared(max: usize, drain: bool, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|n| *n > max as u64) else {
        return next.run(req).await;
    };
    if drain && declared <= DRAIN_MAX {
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut frames = req.into_body().into_data_stream();
            while let Some(Ok(_)) = frames.next().await {}
        });
    }
    let message = format!("request body over this endpoint's limit of {max} bytes");
    AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).into_response()
}

/// Times each request into the latency histogram of its route.
async fn observe(State(api): State<Api>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let route = match path.rsplit('/').next() {
        Some("hello") => "hello",
        Some("cmd") => "cmd",
        Some("result") => "result",
        Some("logs") => "logs",
        Some("stats") => "stats",
        Some("healthz" | "readyz" | "metrics" | "agents") => "operator",
        _ => "other",
    };
    let start = tokio::time::Instant::now();
    let response = next.run(req).await;
    api.state.metrics.observe(route, start.elapsed());
    response
}

/// The token of an `Authorization: Bearer <token>` header, if there is a non-empty one.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// `/metrics` and `/metrics/agents` show queue depths, agents and their stats: served to the
/// holder of the metrics token (`--metrics-token-file`) or, when no token is set, only to
/// loopback peers.
async fn metrics_access(State(api): State<Api>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(a)| *a);
    let bearer = bearer(req.headers());
    // With a token set it is always required: behind a reverse proxy on the same host every
    // peer is a loopback address.
    let allowed = match &api.state.config.metrics_token {
        Some(expected) => bearer.is_some_and(|t| crate::auth::hash(t) == *expected),
        None => peer.is_some_and(|a| a.ip().is_loopback()),
    };
    if allowed {
        return next.run(req).await;
    }
    let message = match api.state.config.metrics_token {
        Some(_) => "metrics need the metrics token (Authorization: Bearer …)",
        None => "metrics are served only to loopback addresses; start jsacc with --metrics-token-file to let Prometheus in with a token",
    };
    AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
}

/// The agent a request comes from, as its token proved ([`authenticate`]).
#[derive(Clone, Debug)]
pub struct Caller {
    /// "gid:nid".
    pub agent: String,
    pub gid: u64,
    pub nid: u64,
    /// SHA-256 of the token it presented (a parked poll checks it again before it delivers).
    pub token_hash: String,
}

/// Checks the bearer token against the path's agent before anything else, the body included,
/// is read; the handler gets a [`Caller`] and a body that must arrive within `--body-timeout`.
async fn authenticate(
    State(api): State<Api>,
    path: Result<Path<(u64, u64)>, axum::extract::rejection::PathRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    let Ok(Path((gid, nid))) = path else {
        return AppError::bad_request("gid and nid in the path must be integers").into_response();
    };
    let unauthorized = |m: &str| AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let Some(token) = bearer(req.headers()) else {
        return unauthorized("missing bearer token").into_response();
    };
    let token_hash = crate::auth::hash(token);
    let agent = keys::agent_id(gid, nid);
    let verdict = api
        .state
        .tokens
        .verify_hash(&mut api.state.conn(), &agent, &token_hash)
        .await;
    match verdict {
        Ok(Verdict::Allowed) => {}
        Ok(Verdict::OtherAgent) => {
            let message = format!("this token belongs to another agent, not {agent}");
            return AppError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response();
        }
        Ok(Verdict::Invalid) => return unauthorized("invalid or revoked token").into_response(),
        Err(e) => return AppError::from(e).into_response(),
    }
    req.extensions_mut().insert(Caller {
        agent,
        gid,
        nid,
        token_hash,
    });
    let timeout = api.state.config.body_timeout;
    let req = req.map(|body| deadline(body, timeout));
    next.run(req).await
}

/// `body`, failing with [`BodyTimeout`] unless it has all arrived within `timeout`.
fn deadline(body: Body, timeout: Duration) -> Body {
    use futures::StreamExt;
    let at = tokio::time::Instant::now() + timeout;
    let frames = body.into_data_stream();
    let timed = futures::stream::unfold(Some(frames), move |frames| async move {
        let mut frames = frames?;
        match tokio::time::timeout_at(at, frames.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(frames))),
            Ok(Some(Err(e))) => Some((Err(axum::BoxError::from(e)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(axum::BoxError::from(BodyTimeout(timeout))), None)),
        }
    });
    Body::from_stream(timed)
}

/// The body of a request did not arrive within `--body-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {} s (--body-timeout)", .0.as_secs())]
struct BodyTimeout(Duration);

async fn hello(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let hello = parse_hello(&body?)?;
    let granted = agents::hello(&api.state, &caller.agent, &hello).await?;
    tracing::info!(
        agent = caller.agent,
        hostname = hello.hostname,
        version = hello.version,
        roles = granted.roles.join(","),
        "agent said hello"
    );
    for warning in &granted.warnings {
        tracing::warn!(agent = caller.agent, "{warning}");
    }
    Ok(Json(json!({
        "lease": api.state.config.lease.as_secs(),
        "server_time": schemas::now_ms(),
        "roles": granted.roles,
        "warnings": granted.warnings,
    })))
}

/// A hello body, checked (a pure function: fuzzed).
pub fn parse_hello(body: &[u8]) -> Result<Hello, AppError> {
    serde_json::from_slice(body).map_err(|e| AppError::bad_request(format!("hello: {e}")))
}

/// Query of a long-poll: `wait` seconds (capped by the controller), acknowledged ids, batch size.
#[derive(Debug, Deserialize)]
pub struct PollParams {
    pub wait: Option<u64>,
    pub ack: Option<String>,
    pub max: Option<usize>,
}

/// Most ids one poll may acknowledge.
pub const MAX_ACKS: usize = 1000;
/// Longest id accepted in `ack`.
const MAX_ACK_ID: usize = 256;

impl PollParams {
    /// The acknowledged ids, checked (a pure function: fuzzed).
    pub fn acks(&self) -> Result<Vec<String>, AppError> {
        let acks: Vec<String> = self
            .ack
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if acks.len() > MAX_ACKS {
            return Err(AppError::bad_request(format!(
                "ack: at most {MAX_ACKS} ids per poll, not {}",
                acks.len()
            )));
        }
        if let Some(long) = acks.iter().find(|a| a.len() > MAX_ACK_ID) {
            return Err(AppError::bad_request(format!(
                "ack: an id of {} bytes (at most {MAX_ACK_ID})",
                long.len()
            )));
        }
        Ok(acks)
    }
}

async fn cmd(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<PollParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let acks = params.acks()?;
    agents::seen(&api.state, &caller.agent).await?;
    let max = params.max.unwrap_or(1).clamp(1, 1000);
    let request = PollRequest {
        agent: caller.agent,
        token_hash: caller.token_hash,
        wait: Duration::from_secs(params.wait.unwrap_or(30).min(schemas::args::MAX_SECONDS)),
        max,
        acks,
    };
    let items = poll::poll(&api.state, request, &api.shutdown).await?;
    if items.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let body = if params.max.unwrap_or(1) <= 1 {
        items.into_iter().next().unwrap_or_default()
    } else {
        let mut body = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.push(b']');
        body
    };
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response())
}

/// A result post, checked: one result, or a batch of them (each checked on its own).
#[derive(Debug)]
pub enum ResultPost {
    One(JobResult),
    /// The valid results, and the answer so far (the rejected ones).
    Batch(Vec<JobResult>, BatchAnswer),
}

/// Parses and checks a result post of agent `gid:nid` (a pure function: fuzzed).
pub fn parse_results(body: &[u8], gid: u64, nid: u64) -> Result<ResultPost, AppError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("not JSON: {e}")))?;
    match value {
        Value::Array(items) => {
            let mut answer = BatchAnswer::default();
            let mut valid = Vec::with_capacity(items.len());
            for item in items {
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                match check_result(item, gid, nid) {
                    Ok(r) => valid.push(r),
                    Err(e) => answer.reject(&id, e.code, e.message),
                }
            }
            Ok(ResultPost::Batch(valid, answer))
        }
        item @ Value::Object(_) => Ok(ResultPost::One(check_result(item, gid, nid)?)),
        _ => Err(AppError::bad_request(
            "expected a result object or an array of them",
        )),
    }
}

async fn result(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchAnswer>, AppError> {
    let agent = &caller.agent;
    match parse_results(&body?, caller.gid, caller.nid)? {
        ResultPost::Batch(valid, mut answer) => {
            let outcomes = results::record_all(&api.state, agent, &valid).await?;
            for (r, outcome) in valid.iter().zip(outcomes) {
                answer.add(&r.id, outcome);
            }
            Ok(Json(answer))
        }
        ResultPost::One(r) => match results::record(&api.state, agent, &r).await? {
            Outcome::UnknownJob => Err(AppError::new(
                StatusCode::NOT_FOUND,
                "unknown_job",
                format!("no job `{}`", r.id),
            )),
            Outcome::NotATarget => {
                let message = format!("job `{}` was not sent to agent {agent}", r.id);
                Err(AppError::new(StatusCode::NOT_FOUND, "unknown_job", message))
            }
            outcome => {
                let mut answer = BatchAnswer::default();
                answer.add(&r.id, outcome);
                Ok(Json(answer))
            }
        },
    }
}

fn check_result(item: Value, gid: u64, nid: u64) -> Result<JobResult, AppError> {
    let r: JobResult =
        serde_json::from_value(item).map_err(|e| AppError::bad_request(format!("result: {e}")))?;
    if (r.gid, r.nid) != (gid, nid) {
        return Err(AppError::mismatched_agent((r.gid, r.nid), (gid, nid)));
    }
    if !r.state.is_final() {
        return Err(AppError::bad_request(format!(
            "result state must be final, not {}",
            r.state.as_str()
        )));
    }
    if !r.is_final && r.run == 0 {
        // Run results are recorded once per run number: without one it would pass for a
        // duplicate and be dropped.
        return Err(AppError::bad_request(
            "a run's result (\"final\": false) needs its `run` number, 1 or more",
        ));
    }
    Ok(r)
}

async fn readyz(State(api): State<Api>) -> Response {
    let mut conn = api.state.conn();
    let ping = redis::cmd("PING");
    match tokio::time::timeout(
        Duration::from_secs(2),
        ping.query_async::<String>(&mut conn),
    )
    .await
    {
        Ok(Ok(_)) => match api.state.router.problem() {
            None => "ready\n".into_response(),
            Some(problem) => AppError::new(StatusCode::SERVICE_UNAVAILABLE, "not_routing", problem)
                .into_response(),
        },
        _ => AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "redis does not answer",
        )
        .into_response(),
    }
}

async fn metrics(State(api): State<Api>) -> Result<Response, AppError> {
    let state = &api.state;
    let since = schemas::now_ms().saturating_sub(state.config.live_window.as_millis() as u64);
    let (queued, dead, online, known): (u64, u64, u64, u64) = redis::pipe()
        .llen(keys::CMDS_QUEUE)
        .llen(keys::DEAD)
        .zcount(keys::AGENTS, since, "+inf")
        .zcard(keys::AGENTS)
        .query_async(&mut state.conn())
        .await?;
    let (waiting, delivered) = stats::agent_queue_depths(state).await?;
    let gauges = [
        (
            "jsacc_cmds_queue_depth",
            "Commands waiting in cmds_queue to be routed.",
            queued as f64,
        ),
        (
            "jsacc_dead_letters",
            "Entries in cmds_queue:dead.",
            dead as f64,
        ),
        (
            "jsacc_agents_online",
            "Agents seen within the live window.",
            online as f64,
        ),
        (
            "jsacc_agents_known",
            "Agents that ever said hello.",
            known as f64,
        ),
        (
            "jsacc_agent_queues_depth",
            "Commands waiting in agents' queues (all agents).",
            waiting as f64,
        ),
        (
            "jsacc_agent_delivered_depth",
            "Commands delivered to agents and not yet acknowledged (all agents).",
            delivered as f64,
        ),
        (
            "jsacc_polls_parked",
            "Long-polls parked on this instance.",
            state.waiters.parked() as f64,
        ),
    ];
    let text = state.metrics.render(&gauges);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
