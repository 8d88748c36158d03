//! The operator API's jobs (issue 13, DESIGN §11): `POST /v1/jobs` (operator), `GET /v1/jobs`,
//! `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/output` (JSON, or Server-Sent Events with
//! `?follow=1`) and `DELETE /v1/jobs/{id}` (operator: kill). Every write is audited.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::auth::Operator;
use super::error::ErrorBody;
use super::{follow, Api, AppError};
use crate::jobs::{self, Filter, SubmitError};
use crate::users::Role;

impl From<SubmitError> for AppError {
    fn from(e: SubmitError) -> AppError {
        match e {
            SubmitError::Invalid(e) => e.into(),
            SubmitError::Redis(e) => e.into(),
        }
    }
}

/// The answer to `POST /v1/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The job's id (the command's own, or a new one).
    pub id: String,
}

/// `POST /v1/jobs`: a command (DESIGN §3; `id` optional) → 201 `{"id"}`.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body(
        content = Object, content_type = "application/json",
        description = "A command (DESIGN §3, schemas/command.schema.json); `id` is optional",
    ),
    responses(
        (status = 201, description = "Queued for routing", body = Submitted),
        (status = 400, description = "Not a valid command", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 403, description = "The account's role is below operator", body = ErrorBody),
        (status = 413, description = "Body over `--max-command`", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn submit(
    State(api): State<Api>,
    operator: Operator,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    operator.require(Role::Operator, "submitting a job")?;
    let id = jobs::submit(&api.state, &body?, &operator.user.name).await?;
    operator
        .audit(&api, "job submit", &format!("job {id}"))
        .await?;
    Ok((StatusCode::CREATED, Json(Submitted { id })).into_response())
}

/// The query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs sent to this agent, "gid:nid".
    #[param(example = "1:1")]
    pub agent: Option<String>,
    /// Only jobs in this state: QUEUED, RUNNING, OK, ERROR, TIMEOUT or KILLED.
    pub state: Option<String>,
    /// Only jobs of this `args.domain` and `args.name`, "domain/name".
    pub name: Option<String>,
    /// How far back: `30s`, `15m`, `1h`, `2d`, or seconds.
    pub since: Option<String>,
    /// Most jobs answered (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// The answer to `GET /v1/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// Newest first, without the agents' results.
    pub jobs: Vec<jobs::Record>,
    /// The scan read its maximum of ids before it reached the end of the history: narrow the
    /// filter to see older jobs.
    pub scan_stopped: bool,
}

/// Most jobs one listing answers.
const LIST_MAX: usize = 1000;

/// `GET /v1/jobs`: the history, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])), params(ListParams),
    responses(
        (status = 200, description = "The matching jobs", body = JobList),
        (status = 400, description = "A filter that does not parse", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn list(
    State(api): State<Api>,
    _viewer: Operator,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<JobList>, AppError> {
    let Query(p) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let filter = filter(&p, schemas::now_ms())?;
    let (found, cut) = jobs::list(&mut api.state.conn(), &filter).await?;
    Ok(Json(JobList {
        jobs: found,
        scan_stopped: cut,
    }))
}

/// The filter `p` asks for, at `now` (a pure function).
pub fn filter(p: &ListParams, now: u64) -> Result<Filter, AppError> {
    let bad = AppError::bad_request;
    if let Some(a) = &p.agent {
        let ok = a
            .split_once(':')
            .is_some_and(|(g, n)| g.parse::<u64>().is_ok() && n.parse::<u64>().is_ok());
        if !ok {
            return Err(bad(format!("agent `{a}`: expected GID:NID")));
        }
    }
    if let Some(s) = &p.state {
        if schemas::JobState::parse(s).is_none() {
            return Err(bad(format!(
                "state `{s}`: one of QUEUED, RUNNING, OK, ERROR, TIMEOUT, KILLED"
            )));
        }
    }
    let name = match &p.name {
        None => None,
        Some(n) => match n.split_once('/') {
            Some((d, n)) if !n.is_empty() => Some((d.to_owned(), n.to_owned())),
            _ => return Err(bad(format!("name `{n}`: expected DOMAIN/NAME"))),
        },
    };
    let since = match &p.since {
        None => None,
        Some(s) => Some(now.saturating_sub(duration_ms(s).ok_or_else(|| {
            bad(format!(
                "since `{s}`: a duration such as 30s, 15m, 1h, 2d, or seconds"
            ))
        })?)),
    };
    Ok(Filter {
        agent: p.agent.clone(),
        state: p.state.clone(),
        name,
        since,
        limit: p.limit.unwrap_or(50).clamp(1, LIST_MAX),
    })
}

/// `30s`, `15m`, `1h`, `2d` or plain seconds, in ms.
fn duration_ms(text: &str) -> Option<u64> {
    let (number, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(secs * 1000)
}

/// `GET /v1/jobs/{id}`: the record with every agent's result.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])), params(JobId),
    responses(
        (status = 200, description = "The job's record with its agents' results", body = jobs::Record),
        (status = 400, description = "A path that does not parse", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 404, description = "No such job (never routed, or expired)", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn get(
    State(api): State<Api>,
    _viewer: Operator,
    path: Result<Path<JobId>, PathRejection>,
) -> Result<Json<jobs::Record>, AppError> {
    let Path(JobId { id }) = path?;
    match jobs::record(&mut api.state.conn(), &id).await? {
        Some(r) => Ok(Json(r)),
        None => Err(unknown(&id)),
    }
}

/// The path of a job's endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobId {
    /// The job's id.
    #[param(min_length = 1)]
    pub id: String,
}

fn unknown(id: &str) -> AppError {
    let message = format!("no job `{id}` (never routed, or its record expired)");
    AppError::new(StatusCode::NOT_FOUND, "unknown_job", message)
}

/// The answer to `DELETE /v1/jobs/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Kills {
    /// The ids of the kill commands, one per agent that had not answered.
    pub kills: Vec<String>,
}

/// `DELETE /v1/jobs/{id}`: kills the job on each agent that has not answered → 202
/// `{"kills": [ids of the kill commands]}`.
#[utoipa::path(
    delete, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])), params(JobId),
    responses(
        (status = 202, description = "Kill commands queued", body = Kills),
        (status = 400, description = "A path that does not parse", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 403, description = "The account's role is below operator", body = ErrorBody),
        (status = 404, description = "No such job (never routed, or expired)", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn kill(
    State(api): State<Api>,
    operator: Operator,
    path: Result<Path<JobId>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(JobId { id }) = path?;
    operator.require(Role::Operator, "killing a job")?;
    let Some(kills) = jobs::kill(&api.state, &id, &operator.user.name).await? else {
        return Err(unknown(&id));
    };
    operator
        .audit(&api, "job kill", &format!("job {id}"))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Kills { kills })).into_response())
}

/// The query of `GET /v1/jobs/{id}/output`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputParams {
    /// The stream entry id to go on after ("0", the default: from the start).
    #[param(example = "1733050000000-0")]
    pub after: Option<String>,
    /// Most lines in a JSON answer (default 1000, at most 10000).
    pub count: Option<usize>,
    /// `1`: Server-Sent Events, one `line` event per line, until the job ended and every line
    /// was sent (then one `end` event with the job's state). Described in the operation's text,
    /// not as a parameter: a generated client should not open hour-long streams.
    #[param(ignore)]
    pub follow: Option<u8>,
}

/// A page of `GET /v1/jobs/{id}/output`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputPage {
    pub lines: Vec<jobs::Line>,
    /// The `after` of the next page.
    pub next: String,
    /// The job's state.
    pub state: String,
    /// The job has ended and this page holds its last lines.
    pub ended: bool,
}

/// `GET /v1/jobs/{id}/output`.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/output", tag = "jobs", security(("bearer" = [])),
    params(JobId, OutputParams),
    description = "A job's live output, a page at a time. With `?follow=1` the answer is \
        instead a stream of Server-Sent Events (`text/event-stream`): one `line` event per line \
        (its data a line as in `lines`, its id the stream entry id), then one `end` event \
        (`{\"state\"}`) once the job ended and every line was sent, or a `timeout` event after \
        an hour (reconnect with `after`); 503 `busy` when too many streams are open.",
    responses(
        (status = 200, description = "A page of lines", body = OutputPage),
        (status = 400, description = "A path or query that does not parse", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 404, description = "No such job (never routed, or expired)", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable, or too many streams", body = ErrorBody),
    ),
)]
pub async fn output(
    State(api): State<Api>,
    _viewer: Operator,
    path: Result<Path<JobId>, PathRejection>,
    params: Result<Query<OutputParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Path(JobId { id }) = path?;
    let Query(p) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let after = p.after.unwrap_or_else(|| "0".into());
    if !valid_stream_id(&after) {
        return Err(AppError::bad_request(format!(
            "after `{after}`: a stream entry id such as 1733050000000-0"
        )));
    }
    let mut conn = api.state.conn();
    let record = jobs::record(&mut conn, &id).await?;
    if p.follow == Some(1) {
        // A job just submitted may not be routed yet: its follower waits for it a while.
        let permit = follow::admit(&api)?;
        let source = JobOutput {
            id,
            since: tokio::time::Instant::now(),
            seen: std::sync::atomic::AtomicBool::new(record.is_some()),
        };
        return Ok(follow::respond(api, source, after, permit));
    }
    let Some(record) = record else {
        return Err(unknown(&id));
    };
    let count = p.count.unwrap_or(1000).clamp(1, 10_000);
    let lines = jobs::output(&mut conn, &id, &after, count).await?;
    let next = lines.last().map_or(after, |l| l.id.clone());
    let ended = record.is_final() && lines.len() < count;
    let page = OutputPage {
        lines,
        next,
        state: record.state,
        ended,
    };
    Ok(Json(page).into_response())
}

/// Whether `text` is "0" or a stream entry id `<ms>-<seq>`.
pub(super) fn valid_stream_id(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    text.split_once('-')
        .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

/// A job's live output, followed: `line` events, then `end` with the job's state once it has
/// ended (or its record is gone) and every line was sent. A job not routed yet (just submitted)
/// is waited for [`ROUTING_GRACE`]; then the stream ends with state "".
struct JobOutput {
    id: String,
    since: tokio::time::Instant,
    /// Its record was seen.
    seen: std::sync::atomic::AtomicBool,
}

/// How long a follower waits for a job that has no record yet.
const ROUTING_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl follow::Source for JobOutput {
    async fn read(&self, api: &Api, after: &str) -> redis::RedisResult<Vec<(String, Event)>> {
        let lines = jobs::output(&mut api.state.conn(), &self.id, after, follow::BATCH).await?;
        Ok(lines
            .into_iter()
            .map(|line| {
                let data = serde_json::to_string(&line).unwrap_or_default();
                let event = Event::default().event("line").id(&line.id).data(data);
                (line.id, event)
            })
            .collect())
    }

    async fn ended(&self, api: &Api) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        match jobs::record(&mut api.state.conn(), &self.id).await {
            Ok(Some(r)) if r.is_final() => Some(json!({"state": r.state}).to_string()),
            Ok(Some(_)) => {
                self.seen.store(true, Relaxed);
                None
            }
            Err(_) => None,
            Ok(None) if !self.seen.load(Relaxed) && self.since.elapsed() < ROUTING_GRACE => None,
            Ok(None) => Some(json!({"state": ""}).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(since: Option<&str>, name: Option<&str>) -> ListParams {
        ListParams {
            agent: None,
            state: None,
            name: name.map(str::to_owned),
            since: since.map(str::to_owned),
            limit: Some(5000),
        }
    }

    #[test]
    fn filters_are_checked_and_durations_read() {
        let f = filter(&params(Some("2h"), Some("ops/backup")), 10_000_000).expect("valid");
        assert_eq!(f.since, Some(10_000_000 - 7_200_000));
        assert_eq!(f.name, Some(("ops".into(), "backup".into())));
        assert_eq!(f.limit, LIST_MAX);
        assert_eq!(duration_ms("90"), Some(90_000));
        assert_eq!(duration_ms("3d"), Some(3 * 86_400_000));
        for bad in ["", "h", "1w", "-1s", "99999999999999999999d"] {
            assert_eq!(duration_ms(bad), None, "{bad}");
        }
        assert!(filter(&params(None, Some("nodomain")), 0).is_err());
        let bad_agent = ListParams {
            agent: Some("1".into()),
            ..params(None, None)
        };
        assert!(filter(&bad_agent, 0).is_err());
    }

    #[test]
    fn stream_ids_are_checked() {
        assert!(valid_stream_id("0") && valid_stream_id("1733050000000-3"));
        assert!(!valid_stream_id("+") && !valid_stream_id("1-") && !valid_stream_id("x-1"));
    }

    /// Schemathesis: `after` = the largest id was a 500 (Redis refuses an exclusive start there).
    #[test]
    fn nothing_follows_the_largest_stream_id() {
        let largest = "18446744073709551615-18446744073709551615";
        assert!(valid_stream_id(largest));
        assert_eq!(jobs::range_start(largest), None);
        assert_eq!(jobs::range_start("0").as_deref(), Some("-"));
        assert_eq!(jobs::range_start("5-1").as_deref(), Some("(5-1"));
    }
}
