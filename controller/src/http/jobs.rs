//! The operator API's jobs (issue 13, DESIGN §11): `POST /v1/jobs` (operator), `GET /v1/jobs`,
//! `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/output` (JSON, or Server-Sent Events with
//! `?follow=1`) and `DELETE /v1/jobs/{id}` (operator: kill). Every write is audited.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Operator;
use super::{Api, AppError};
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

/// `POST /v1/jobs`: a command (DESIGN §3; `id` optional) → 201 `{"id"}`.
pub async fn submit(
    State(api): State<Api>,
    operator: Operator,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    operator.require(Role::Operator, "submitting a job")?;
    let cmd: Value = serde_json::from_slice(&body?)
        .map_err(|e| AppError::bad_request(format!("not JSON: {e}")))?;
    let id = jobs::submit(&api.state, cmd, &operator.user.name).await?;
    operator
        .audit(&api, "job submit", &format!("job {id}"))
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
}

/// The query of `GET /v1/jobs`.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    /// "gid:nid".
    pub agent: Option<String>,
    pub state: Option<String>,
    /// "domain/name".
    pub name: Option<String>,
    /// How far back: `30s`, `15m`, `1h`, `2d`, or seconds.
    pub since: Option<String>,
    pub limit: Option<usize>,
}

/// Most jobs one listing answers.
const LIST_MAX: usize = 1000;

/// `GET /v1/jobs`: the history, newest first.
pub async fn list(
    State(api): State<Api>,
    _viewer: Operator,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(p) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let filter = filter(&p, schemas::now_ms())?;
    let (found, cut) = jobs::list(&mut api.state.conn(), &filter).await?;
    Ok(Json(json!({"jobs": found, "scan_stopped": cut})))
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
pub async fn get(
    State(api): State<Api>,
    _viewer: Operator,
    Path(id): Path<String>,
) -> Result<Json<jobs::Record>, AppError> {
    match jobs::record(&mut api.state.conn(), &id).await? {
        Some(r) => Ok(Json(r)),
        None => Err(unknown(&id)),
    }
}

fn unknown(id: &str) -> AppError {
    let message = format!("no job `{id}` (never routed, or its record expired)");
    AppError::new(StatusCode::NOT_FOUND, "unknown_job", message)
}

/// `DELETE /v1/jobs/{id}`: kills the job on each agent that has not answered → 202
/// `{"kills": [ids of the kill commands]}`.
pub async fn kill(
    State(api): State<Api>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    operator.require(Role::Operator, "killing a job")?;
    let Some(kills) = jobs::kill(&api.state, &id, &operator.user.name).await? else {
        return Err(unknown(&id));
    };
    operator
        .audit(&api, "job kill", &format!("job {id}"))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"kills": kills}))).into_response())
}

/// The query of `GET /v1/jobs/{id}/output`.
#[derive(Debug, Deserialize)]
pub struct OutputParams {
    /// The stream entry id to go on after ("0", the default: from the start).
    pub after: Option<String>,
    /// Most lines in a JSON answer (default 1000, at most 10000).
    pub count: Option<usize>,
    /// `1`: Server-Sent Events, one `line` event per line, until the job ended and every line
    /// was sent (then one `end` event with the job's state).
    pub follow: Option<u8>,
}

/// How often a follower looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How long one follow stream stays open (a client reconnects with `after`).
const FOLLOW_MAX: Duration = Duration::from_secs(3600);

/// `GET /v1/jobs/{id}/output`.
pub async fn output(
    State(api): State<Api>,
    _viewer: Operator,
    Path(id): Path<String>,
    params: Result<Query<OutputParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(p) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let after = p.after.unwrap_or_else(|| "0".into());
    if !valid_stream_id(&after) {
        return Err(AppError::bad_request(format!(
            "after `{after}`: a stream entry id such as 1733050000000-0"
        )));
    }
    let mut conn = api.state.conn();
    let Some(record) = jobs::record(&mut conn, &id).await? else {
        return Err(unknown(&id));
    };
    if p.follow == Some(1) {
        let permit = api
            .state
            .followers
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many followers on this controller; retry later",
                )
            })?;
        let stream = follow(api, id, after, permit);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let count = p.count.unwrap_or(1000).clamp(1, 10_000);
    let lines = jobs::output(&mut conn, &id, &after, count).await?;
    let next = lines.last().map_or(after, |l| l.id.clone());
    let ended = record.is_final() && lines.len() < count;
    Ok(
        Json(json!({"lines": lines, "next": next, "state": record.state, "ended": ended}))
            .into_response(),
    )
}

/// Whether `text` is "0" or a stream entry id `<ms>-<seq>`.
pub(super) fn valid_stream_id(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    text.split_once('-')
        .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

/// Where a follower is.
struct Following {
    api: Api,
    id: String,
    after: String,
    pending: VecDeque<jobs::Line>,
    /// The job had ended at the last look, so the next empty read ends the stream.
    ended: bool,
    done: bool,
    until: tokio::time::Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The job's lines as events as they come, then an `end` event.
fn follow(
    api: Api,
    id: String,
    after: String,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = Following {
        api,
        id,
        after,
        pending: VecDeque::new(),
        ended: false,
        done: false,
        until: tokio::time::Instant::now() + FOLLOW_MAX,
        _permit: permit,
    };
    futures::stream::unfold(start, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            if let Some(line) = f.pending.pop_front() {
                let data = serde_json::to_string(&line).unwrap_or_default();
                let event = Event::default().event("line").id(line.id).data(data);
                return Some((Ok(event), f));
            }
            let mut conn = f.api.state.conn();
            let lines = jobs::output(&mut conn, &f.id, &f.after, 1000).await;
            match lines {
                Ok(lines) if !lines.is_empty() => {
                    f.after = lines.last().map(|l| l.id.clone()).unwrap_or_default();
                    f.pending.extend(lines);
                    continue;
                }
                Ok(_) if f.ended => {
                    f.done = true;
                    let state = jobs::record(&mut conn, &f.id).await.ok().flatten();
                    let state = state.map(|r| r.state).unwrap_or_default();
                    let data = json!({"state": state}).to_string();
                    return Some((Ok(Event::default().event("end").data(data)), f));
                }
                Ok(_) => {
                    // Read once more after the job ended: its last lines precede its result.
                    let record = jobs::record(&mut conn, &f.id).await.ok().flatten();
                    f.ended = record.is_none_or(|r| r.is_final());
                }
                Err(e) => tracing::warn!(error = %e, "following output: redis failed"),
            }
            // Everything there is was sent: stop here when it is time.
            if tokio::time::Instant::now() >= f.until || f.api.shutdown.is_cancelled() {
                f.done = true;
                let event = Event::default()
                    .event("timeout")
                    .data("reconnect with after");
                return Some((Ok(event), f));
            }
            if !f.ended {
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                    _ = f.api.shutdown.cancelled() => {}
                }
            }
        }
    })
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
}
