//! The operator endpoints: `/healthz` (the process answers), `/readyz` (Redis answers and the
//! router routes), `/metrics` (Prometheus text of this instance and the queues) and
//! `/metrics/agents` (every agent's latest stats).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Api, AppError};
use crate::{keys, stats};

/// Prometheus' text format.
const PROMETHEUS_TEXT: [(header::HeaderName, &str); 1] =
    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain", example = "ok\n")),
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: Redis answers and the router routes.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain", example = "ready\n"),
        (status = 503, description = "Redis does not answer, or the router does not route", body = super::error::ErrorBody),
    ),
)]
pub async fn readyz(State(api): State<Api>) -> Response {
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

pub async fn metrics(State(api): State<Api>) -> Result<Response, AppError> {
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
    Ok((PROMETHEUS_TEXT, text).into_response())
}

/// `GET /metrics/agents`: every agent's latest stats, with `gid` and `nid` labels.
pub async fn agent_metrics(State(api): State<Api>) -> Result<Response, AppError> {
    let text = stats::agents_text(&api.state).await?;
    Ok((PROMETHEUS_TEXT, text).into_response())
}
