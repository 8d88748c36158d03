//! The HTTP API (DESIGN §8, docs/protocol.md): agent endpoints behind bearer tokens, operator
//! endpoints without. [`app`] builds the router, so tests can drive it without a network.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

pub fn app(api: Api) -> Router {
    let max_body = api.state.config.max_body;
    Router::new()
        .route("/v1/agents/{gid}/{nid}/hello", post(hello))
        .route("/v1/agents/{gid}/{nid}/cmd", get(cmd))
        .route("/v1/agents/{gid}/{nid}/result", post(result))
        .route("/v1/agents/{gid}/{nid}/logs", post(crate::logs::post))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/agents/{gid}/{nid}/stats", post(stats::post))
        .route("/metrics/agents", get(stats::metrics))
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
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(api.clone(), refuse_large))
        .layer(middleware::from_fn_with_state(api.clone(), observe))
        .with_state(api)
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

/// Refuses a declared body over the limit on every endpoint, before any handler runs (bodies
/// without a length are cut by [`DefaultBodyLimit`] where they are read).
async fn refuse_large(State(api): State<Api>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > api.state.config.max_body) {
        let message = format!(
            "request body over the limit of {} bytes",
            api.state.config.max_body
        );
        return AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).into_response();
    }
    next.run(req).await
}

/// Checks the bearer token against the path's agent; returns its "gid:nid".
pub(crate) async fn authorize(
    api: &Api,
    headers: &HeaderMap,
    gid: u64,
    nid: u64,
) -> Result<String, AppError> {
    let unauthorized = |m: &str| AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("missing bearer token"))?;
    let agent = keys::agent_id(gid, nid);
    match api
        .state
        .tokens
        .verify(&mut api.state.conn(), &agent, token)
        .await?
    {
        Verdict::Allowed => Ok(agent),
        Verdict::OtherAgent => Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token belongs to another agent, not {agent}"),
        )),
        Verdict::Invalid => Err(unauthorized("invalid or revoked token")),
    }
}

/// The agent a post comes from (authorized) and its body as JSON: the common start of
/// `…/result`, `…/logs` and `…/stats`.
pub(crate) async fn agent_json(
    api: &Api,
    headers: &HeaderMap,
    (gid, nid): (u64, u64),
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Value), AppError> {
    let body = body?;
    let agent = authorize(api, headers, gid, nid).await?;
    let value = serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request(format!("not JSON: {e}")))?;
    Ok((agent, value))
}

async fn hello(
    State(api): State<Api>,
    Path((gid, nid)): Path<(u64, u64)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let body = body?;
    let agent = authorize(&api, &headers, gid, nid).await?;
    let hello: Hello =
        serde_json::from_slice(&body).map_err(|e| AppError::bad_request(format!("hello: {e}")))?;
    agents::hello(&api.state, &agent, &hello).await?;
    tracing::info!(
        agent,
        hostname = hello.hostname,
        version = hello.version,
        "agent said hello"
    );
    Ok(Json(
        json!({"lease": api.state.config.lease.as_secs(), "server_time": schemas::now_ms()}),
    ))
}

#[derive(Deserialize)]
struct PollParams {
    wait: Option<u64>,
    ack: Option<String>,
    max: Option<usize>,
}

async fn cmd(
    State(api): State<Api>,
    Path((gid, nid)): Path<(u64, u64)>,
    headers: HeaderMap,
    params: Result<Query<PollParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let agent = authorize(&api, &headers, gid, nid).await?;
    agents::seen(&api.state, &agent).await?;
    let acks: Vec<String> = params
        .ack
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let max = params.max.unwrap_or(1).clamp(1, 1000);
    let request = PollRequest {
        agent,
        wait: Duration::from_secs(params.wait.unwrap_or(30)),
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

async fn result(
    State(api): State<Api>,
    Path((gid, nid)): Path<(u64, u64)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchAnswer>, AppError> {
    let (agent, value) = agent_json(&api, &headers, (gid, nid), body).await?;
    let mut answer = BatchAnswer::default();
    match value {
        Value::Array(items) => {
            let mut valid = Vec::with_capacity(items.len());
            for item in items {
                let id = item
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                match check_result(item, gid, nid) {
                    Ok(r) => valid.push(r),
                    Err(e) => answer.reject(&id, e.message),
                }
            }
            let outcomes = results::record_all(&api.state, &agent, &valid).await?;
            for (r, outcome) in valid.iter().zip(outcomes) {
                answer.add(&r.id, outcome);
            }
        }
        item @ Value::Object(_) => {
            let r = check_result(item, gid, nid)?;
            match results::record(&api.state, &agent, &r).await? {
                Outcome::UnknownJob => {
                    return Err(AppError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_job",
                        format!("no job `{}`", r.id),
                    ))
                }
                Outcome::NotATarget => {
                    let message = format!("job `{}` was not sent to agent {agent}", r.id);
                    return Err(AppError::new(StatusCode::NOT_FOUND, "unknown_job", message));
                }
                outcome => answer.add(&r.id, outcome),
            }
        }
        _ => {
            return Err(AppError::bad_request(
                "expected a result object or an array of them",
            ))
        }
    }
    Ok(Json(answer))
}

fn check_result(item: Value, gid: u64, nid: u64) -> Result<JobResult, AppError> {
    let r: JobResult =
        serde_json::from_value(item).map_err(|e| AppError::bad_request(format!("result: {e}")))?;
    if (r.gid, r.nid) != (gid, nid) {
        let message = format!(
            "result names agent {}:{} but was posted as {gid}:{nid}",
            r.gid, r.nid
        );
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "mismatched_agent",
            message,
        ));
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
        Ok(Ok(_)) => "ready\n".into_response(),
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
