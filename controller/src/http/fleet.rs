//! The operator API's agents and logs (issue 13, DESIGN §11): `GET /v1/me`, `GET /v1/agents`,
//! `GET /v1/agents/{gid}/{nid}` (facts, latest stats, recent stats batches, recent jobs) and
//! `GET /v1/logs/{domain}/{name}` (JSON, or Server-Sent Events with `?follow=1`).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Operator;
use super::error::ErrorBody;
use super::{follow, Api, AppError};
use crate::users::Role;
use crate::{fleet, keys};

/// The answer to `GET /v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub name: String,
    pub role: Role,
}

/// `GET /v1/me`: the account the token belongs to, and its role.
#[utoipa::path(
    get, path = "/v1/me", tag = "fleet", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account", body = Me),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn me(operator: Operator) -> Json<Me> {
    Json(Me {
        name: operator.user.name,
        role: operator.user.role,
    })
}

fn live_since(api: &Api) -> u64 {
    schemas::now_ms().saturating_sub(api.state.config.live_window.as_millis() as u64)
}

/// The answer to `GET /v1/agents`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    /// By (gid, nid).
    pub agents: Vec<fleet::Agent>,
}

/// `GET /v1/agents`: every known agent with its facts and latest stats, by (gid, nid).
#[utoipa::path(
    get, path = "/v1/agents", tag = "fleet", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every known agent", body = AgentList),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn agents(
    State(api): State<Api>,
    _viewer: Operator,
) -> Result<Json<AgentList>, AppError> {
    let agents = fleet::agents(&mut api.state.conn(), live_since(&api)).await?;
    Ok(Json(AgentList { agents }))
}

/// Stats batches answered for an agent's charts.
const BATCHES: usize = 120;
/// Jobs answered for an agent's page.
const JOBS: usize = 20;

/// An agent's path: its grid and node ids.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentId {
    #[param(example = 1)]
    pub gid: u64,
    #[param(example = 1)]
    pub nid: u64,
}

/// The answer to `GET /v1/agents/{gid}/{nid}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentPage {
    pub agent: fleet::Agent,
    /// Its newest stats batches (DESIGN §7, schemas/stats_batch.schema.json), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub stats_batches: Vec<Value>,
    /// The ids of its newest jobs, newest first.
    pub jobs: Vec<String>,
}

/// `GET /v1/agents/{gid}/{nid}`: one agent, its newest stats batches (oldest first) and the ids
/// of its newest jobs.
#[utoipa::path(
    get, path = "/v1/agents/{gid}/{nid}", tag = "fleet", security(("bearer" = [])),
    params(AgentId),
    responses(
        (status = 200, description = "The agent, its recent stats and jobs", body = AgentPage),
        (status = 400, description = "gid or nid is not an integer", body = ErrorBody),
        (status = 404, description = "No such agent (it never said hello)", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn agent(
    State(api): State<Api>,
    _viewer: Operator,
    path: Result<Path<AgentId>, PathRejection>,
) -> Result<Json<AgentPage>, AppError> {
    let Path(AgentId { gid, nid }) = path?;
    let id = keys::agent_id(gid, nid);
    let mut conn = api.state.conn();
    match fleet::agent(&mut conn, &id, live_since(&api), BATCHES, JOBS).await? {
        Some((agent, stats_batches, jobs)) => Ok(Json(AgentPage {
            agent,
            stats_batches,
            jobs,
        })),
        None => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            format!("no agent {id} (it never said hello)"),
        )),
    }
}

/// The query of `GET /v1/logs/{domain}/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// The stream entry id to go on after: "0" from the oldest kept; "$" (the default with
    /// `follow`) only what comes next.
    #[param(example = "1733050000000-0")]
    pub after: Option<String>,
    /// Most messages in a JSON answer (default 100, at most 10000): the newest ones when
    /// `after` is not given.
    pub count: Option<usize>,
    /// `1`: Server-Sent Events, one `log` event per message, for up to an hour. In the
    /// operation's text, not a declared parameter (a generated client should not open streams).
    #[param(ignore)]
    pub follow: Option<u8>,
}

/// A log stream's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LogStream {
    /// The messages' `domain`.
    #[param(min_length = 1)]
    pub domain: String,
    /// The messages' `name`.
    #[param(min_length = 1)]
    pub name: String,
}

/// A page of `GET /v1/logs/{domain}/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    /// Oldest first.
    pub messages: Vec<fleet::LogEntry>,
    /// The `after` of the next page.
    pub next: String,
}

/// `GET /v1/logs/{domain}/{name}`.
#[utoipa::path(
    get, path = "/v1/logs/{domain}/{name}", tag = "fleet", security(("bearer" = [])),
    params(LogStream, LogParams),
    description = "The messages agents forwarded to a log stream, a page at a time. With \
        `?follow=1` the answer is instead a stream of Server-Sent Events (`text/event-stream`): \
        one `log` event per message as it comes (its data a message as in `messages`, its id \
        the stream entry id), for up to an hour (then a `timeout` event: reconnect with \
        `after`); 503 `busy` when too many streams are open.",
    responses(
        (status = 200, description = "A page of messages", body = LogPage),
        (status = 400, description = "A path or query that does not parse", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn logs(
    State(api): State<Api>,
    _viewer: Operator,
    path: Result<Path<LogStream>, PathRejection>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Path(LogStream { domain, name }) = path?;
    let Query(p) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let mut conn = api.state.conn();
    let follow = p.follow == Some(1);
    let after = match p.after.as_deref() {
        None if follow => "$".to_owned(),
        None => String::new(),
        Some(a) if a == "0" || a == "$" || super::jobs::valid_stream_id(a) => a.to_owned(),
        Some(a) => {
            return Err(AppError::bad_request(format!(
                "after `{a}`: 0, $ or a stream entry id such as 1733050000000-0"
            )))
        }
    };
    let after = match after.as_str() {
        "$" => fleet::logs_end(&mut conn, &domain, &name).await?,
        _ => after,
    };
    if follow {
        let permit = follow::admit(&api)?;
        return Ok(follow::respond(
            api,
            LogFollow { domain, name },
            after,
            permit,
        ));
    }
    let count = p.count.unwrap_or(100).clamp(1, 10_000);
    let entries = if after.is_empty() {
        fleet::newest_logs(&mut conn, &domain, &name, count).await?
    } else {
        fleet::logs(&mut conn, &domain, &name, &after, count).await?
    };
    let next = entries.last().map_or(after, |e| e.id.clone());
    let page = LogPage {
        messages: entries,
        next,
    };
    Ok(Json(page).into_response())
}

/// A log stream, followed: `log` events; it never ends.
struct LogFollow {
    domain: String,
    name: String,
}

impl follow::Source for LogFollow {
    async fn read(&self, api: &Api, after: &str) -> redis::RedisResult<Vec<(String, Event)>> {
        let mut conn = api.state.conn();
        let entries =
            fleet::logs(&mut conn, &self.domain, &self.name, after, follow::BATCH).await?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let data = serde_json::to_string(&e).unwrap_or_default();
                let event = Event::default().event("log").id(&e.id).data(data);
                (e.id, event)
            })
            .collect())
    }

    async fn ended(&self, _: &Api) -> Option<String> {
        None
    }
}
