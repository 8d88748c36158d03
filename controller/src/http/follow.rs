//! Following a Redis stream as Server-Sent Events (`?follow=1` on a job's output and on a log
//! stream): one event per entry as it arrives, polled every [`EVERY`] without holding a Redis
//! connection, for at most [`MAX`] (then `event: timeout`: the client reconnects with `after`).
//! A stream that can end (a job's output) sends `event: end` once it has and every entry was
//! sent. Followers are counted: an instance serves at most `state::MAX_FOLLOWERS`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::OwnedSemaphorePermit;

use super::{Api, AppError};

/// How often a follower looks for new entries.
pub const EVERY: Duration = Duration::from_millis(250);
/// How long one follow stream stays open.
pub const MAX: Duration = Duration::from_secs(3600);
/// Entries read per look.
pub const BATCH: usize = 1000;

/// What is followed.
pub trait Source: Send + Sync + 'static {
    /// Up to [`BATCH`] entries after stream entry `after`: each its stream id and its event.
    fn read(
        &self,
        api: &Api,
        after: &str,
    ) -> impl Future<Output = redis::RedisResult<Vec<(String, Event)>>> + Send;

    /// Whether the stream has ended, and the data of its `end` event if so; `None` for a
    /// stream that never ends.
    fn ended(&self, api: &Api) -> impl Future<Output = Option<String>> + Send;
}

/// A room for one more follower, or 503 `busy`.
pub fn admit(api: &Api) -> Result<OwnedSemaphorePermit, AppError> {
    api.state
        .followers
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many followers on this controller; retry later",
            )
        })
}

/// The answer that follows `source` from after entry `after`.
pub fn respond<S: Source>(
    api: Api,
    source: S,
    after: String,
    permit: OwnedSemaphorePermit,
) -> Response {
    Sse::new(events(api, source, after, permit))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Where a follower is.
struct Following<S> {
    api: Api,
    source: S,
    after: String,
    pending: VecDeque<Event>,
    /// The `end` event's data once the source has ended: the next empty read sends it.
    end: Option<String>,
    done: bool,
    until: tokio::time::Instant,
    _permit: OwnedSemaphorePermit,
}

fn events<S: Source>(
    api: Api,
    source: S,
    after: String,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = Following {
        api,
        source,
        after,
        pending: VecDeque::new(),
        end: None,
        done: false,
        until: tokio::time::Instant::now() + MAX,
        _permit: permit,
    };
    futures::stream::unfold(start, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            if let Some(event) = f.pending.pop_front() {
                return Some((Ok(event), f));
            }
            match f.source.read(&f.api, &f.after).await {
                Ok(entries) if !entries.is_empty() => {
                    if let Some((id, _)) = entries.last() {
                        f.after = id.clone();
                    }
                    f.pending.extend(entries.into_iter().map(|(_, e)| e));
                    continue;
                }
                Ok(_) => match f.end.take() {
                    Some(data) => {
                        f.done = true;
                        return Some((Ok(Event::default().event("end").data(data)), f));
                    }
                    // Read once more after the source ended: its last entries may have come
                    // just before (a job's last lines precede its result).
                    None => f.end = f.source.ended(&f.api).await,
                },
                Err(e) => tracing::warn!(error = %e, "following a stream: redis failed"),
            }
            // Everything there is was sent: stop here when it is time.
            if tokio::time::Instant::now() >= f.until || f.api.shutdown.is_cancelled() {
                f.done = true;
                let event = Event::default()
                    .event("timeout")
                    .data("reconnect with after");
                return Some((Ok(event), f));
            }
            if f.end.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(EVERY) => {}
                    _ = f.api.shutdown.cancelled() => {}
                }
            }
        }
    })
}
