//! [`AppError`], the JSON error answer of every endpoint (DESIGN §8): `{"error": code,
//! "message": text}` with its status. A Redis error is 503 when Redis is out or failing over
//! (the caller retries later) and 500 when Redis refused the request itself (a bug to report).

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::intake::Invalid;
use crate::redis_conn::{is_not_replicated, is_unavailable};

#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error's code (`"bad_request"`, `"mismatched_agent"`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A short code to branch on: `bad_request`, `unauthorized`, `forbidden`, `unknown_job`,
    /// `too_large`, `unavailable`, `internal`, …
    #[schema(example = "bad_request")]
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl From<Invalid> for AppError {
    fn from(e: Invalid) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, e.code, e.message)
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> AppError {
        if is_not_replicated(&e) {
            // Expected during a replica's outage or a failover; the agent retries.
            tracing::warn!(error = %e, "write not confirmed by enough replicas; answered 503");
            return AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_replicated",
                format!("redis did not replicate the write in time ({e}); retry later"),
            );
        }
        if is_unavailable(&e) {
            tracing::warn!(error = %e, "redis is unavailable; answered 503");
            return AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "redis is unreachable; retry later",
            );
        }
        // Redis answered, and refused: retrying will not help, and the operator must know.
        tracing::error!(error = %e, "redis refused a request; answered 500");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the controller's request to redis failed; see the controller's log",
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

/// A path segment that does not parse (a number too large, text that is not UTF-8): the JSON
/// 400 rather than axum's plain-text one.
impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> AppError {
        AppError::bad_request(r.body_text())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    fn server(kind: ServerErrorKind, detail: &str) -> RedisError {
        RedisError::from((ErrorKind::Server(kind), "server error", detail.to_owned()))
    }

    #[test]
    fn redis_out_is_503_and_redis_refusing_is_500() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let unavailable = [
            io,
            server(ServerErrorKind::ReadOnly, "replica"),
            server(ServerErrorKind::TryAgain, "resharding"),
            server(ServerErrorKind::ClusterDown, "down"),
            crate::redis_conn::not_replicated(1),
        ];
        for e in unavailable {
            let shown = e.to_string();
            assert_eq!(
                AppError::from(e).status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{shown}"
            );
        }
        let refused = [
            server(ServerErrorKind::ResponseError, "WRONGTYPE"),
            server(ServerErrorKind::ResponseError, "ERR user_script:1: bug"),
        ];
        for e in refused {
            let error = AppError::from(e);
            assert_eq!(
                (error.status(), error.code()),
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            );
        }
    }
}
