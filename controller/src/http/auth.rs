//! Who may call what: agents prove themselves with their bearer token before their body is
//! read ([`authenticate`], which hands the handler a [`Caller`]); `/metrics*` is served to the
//! holder of the metrics token or, without one, to loopback peers only ([`metrics_access`]).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Api, AppError};
use crate::auth::Verdict;
use crate::keys;

/// The agent a request comes from, as its token proved ([`authenticate`]); a handler of an
/// agent route takes it as an argument.
#[derive(Clone, Debug)]
pub struct Caller {
    /// "gid:nid".
    pub agent: String,
    pub gid: u64,
    pub nid: u64,
    /// SHA-256 of the token it presented (a parked poll checks it again before it delivers).
    pub token_hash: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, AppError> {
        // Only ever missing on a route mounted without `authenticate`: a bug, refused closed.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "route without authentication",
            )
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is a non-empty one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Checks the bearer token against the path's agent before anything else, the body included,
/// is read; the handler gets a [`Caller`] and a body that must arrive within `--body-timeout`.
pub async fn authenticate(
    State(api): State<Api>,
    path: Result<Path<(u64, u64)>, axum::extract::rejection::PathRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    let Ok(Path((gid, nid))) = path else {
        return AppError::bad_request("gid and nid in the path must be integers").into_response();
    };
    let Some(token) = bearer(req.headers()) else {
        return AppError::unauthorized("missing bearer token").into_response();
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
        Ok(Verdict::Invalid) => {
            return AppError::unauthorized("invalid or revoked token").into_response()
        }
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
pub(super) fn deadline(body: Body, timeout: Duration) -> Body {
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

/// `/metrics` and `/metrics/agents` show queue depths, agents and their stats: served to the
/// holder of the metrics token (`--metrics-token-file`) or, when no token is set, only to
/// loopback peers.
pub async fn metrics_access(State(api): State<Api>, req: Request, next: Next) -> Response {
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
    AppError::unauthorized(message).into_response()
}

/// The operator account a request of the operator API comes from, as its bearer token proved
/// (`jsacc user add`), and where it came from (for the audit trail).
#[derive(Clone, Debug)]
pub struct Operator {
    pub user: crate::users::User,
    /// The peer's address, or "unknown".
    pub from: String,
}

impl Operator {
    /// Refuses with 403 unless the account's role allows what `needed` may do.
    pub fn require(&self, needed: crate::users::Role, what: &str) -> Result<(), AppError> {
        if self.user.role.allows(needed) {
            return Ok(());
        }
        let message = format!(
            "account {} has role {}: {what} needs role {needed} or above",
            self.user.name, self.user.role
        );
        Err(AppError::new(StatusCode::FORBIDDEN, "forbidden", message))
    }

    /// Appends a write this operator made to the audit trail.
    pub async fn audit(&self, api: &Api, what: &str, target: &str) -> Result<(), AppError> {
        let entry = crate::audit::Entry {
            who: &self.user.name,
            what,
            target,
            from: &self.from,
        };
        crate::audit::record(&mut api.state.conn(), &entry).await?;
        Ok(())
    }
}

impl FromRequestParts<Api> for Operator {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Operator, AppError> {
        let Some(token) = bearer(&parts.headers) else {
            return Err(AppError::unauthorized(
                "missing bearer token: an operator token from `jsacc user add`",
            ));
        };
        let user = crate::users::verify(&mut api.state.conn(), token).await?;
        let Some(user) = user else {
            return Err(AppError::unauthorized("invalid or revoked operator token"));
        };
        let from = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |ConnectInfo(a)| a.to_string());
        Ok(Operator { user, from })
    }
}
