//! The HTTP layer (DESIGN §8, docs/protocol.md) over the Redis-only modules, which never import
//! it: [`app`] builds the router (so tests drive it without a network), [`AppError`] is every
//! error answer, [`auth`] says who may call what, [`agent`] and [`operator`] are the handlers.
//!
//! An agent request's token is checked before its body is read ([`auth::authenticate`]), so a
//! stranger cannot make the controller read or hold a body; each route has its own body limit,
//! and a body must arrive within `--body-timeout`. [`enroll`] (`POST /v1/enroll`) is the one
//! route that reads a body without a token: 4 KiB at most, under the same deadline.

mod admin;
mod agent;
mod auth;
mod enroll;
mod error;
mod fleet;
mod follow;
mod jobs;
mod openapi;
mod operator;
#[cfg(test)]
mod tests;
mod ui;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use admin::{parse_new_token, parse_new_user, NewToken, NewUser};
pub use agent::{PollParams, MAX_ACKS};
pub use auth::{bearer, Caller};
pub use enroll::{parse_enroll, EnrollRequest, MAX_CODE, MAX_HOSTNAME};
pub use error::AppError;

use crate::state::AppState;

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
    let max_command = api.state.config.max_command;
    let agent = Router::new()
        .route("/hello", limit(post(agent::hello), HELLO_MAX_BODY))
        .route("/cmd", limit(get(agent::cmd), NO_BODY))
        .route("/result", limit(post(agent::result), max_body))
        .route("/logs", limit(post(agent::logs), max_body))
        .route("/stats", limit(post(agent::stats), stats_max))
        .route("/output", limit(post(agent::output), max_body))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            auth::authenticate,
        ));
    let metrics_routes = Router::new()
        .route("/metrics", get(operator::metrics))
        .route("/metrics/agents", get(operator::agent_metrics))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            auth::metrics_access,
        ));
    let operators = Router::new()
        .route(
            "/v1/jobs",
            post(jobs::submit)
                .layer(DefaultBodyLimit::max(max_command))
                .layer(middleware::from_fn(move |req: Request, next: Next| {
                    refuse_declared(max_command, false, req, next)
                }))
                .get(jobs::list),
        )
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::kill))
        .route("/v1/jobs/{id}/output", get(jobs::output))
        .route("/v1/me", get(fleet::me))
        .route("/v1/agents", get(fleet::agents))
        .route("/v1/agents/{gid}/{nid}", get(fleet::agent))
        .route("/v1/logs/{domain}/{name}", get(fleet::logs))
        .route("/v1/users", get(admin::list_users).post(admin::add_user))
        .route("/v1/users/{name}", delete(admin::revoke_user))
        .route("/v1/tokens", post(admin::add_token))
        .route("/v1/tokens/{gid}/{nid}", delete(admin::revoke_token));
    Router::new()
        .nest("/v1/agents/{gid}/{nid}", agent)
        .merge(operators)
        .merge(metrics_routes)
        // The dashboard's files: no token (they hold no data; the app calls /v1 with one).
        .merge(ui::routes())
        // Enrollment: no token (the code in its small body is the credential); the body limit
        // is the router's (NO_BODY, refused from the declared length first), under a deadline.
        .route(
            "/v1/enroll",
            post(enroll::enroll)
                .route_layer(middleware::from_fn_with_state(api.clone(), enroll::bounded)),
        )
        // The operator API's description: no token (it holds no data), no body.
        .route("/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(operator::healthz))
        .route("/readyz", get(operator::readyz))
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
        // Agent routes and job submissions have their own limits; nothing else takes a body.
        .layer(middleware::from_fn(|req: Request, next: Next| async move {
            let path = req.uri().path();
            match path.starts_with("/v1/agents/") || path == "/v1/jobs" {
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
        Some("output") => "output",
        Some("healthz" | "readyz" | "metrics" | "agents") => "operator",
        _ => "other",
    };
    let start = tokio::time::Instant::now();
    let response = next.run(req).await;
    api.state.metrics.observe(route, start.elapsed());
    response
}
