//! `POST /v1/enroll` (issue 14): a new machine trades a one-time enrollment code
//! (`jsacc enroll create`) for an agent token. There is no bearer token — the code is the
//! credential — so this is the one route that reads a body from a stranger: at most
//! [`super::NO_BODY`] (4 KiB, the router's limit for routes without one of their own: a larger
//! declared length is refused before reading, a longer body is cut), within `--body-timeout`
//! ([`bounded`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{Api, AppError};
use crate::enroll::{self, EnrollError};
use crate::intake::{self, Invalid};

/// Longest `code`, in bytes (`jsacc enroll create` makes codes of 44).
pub const MAX_CODE: usize = 128;
/// Longest `hostname`, in bytes.
pub const MAX_HOSTNAME: usize = 253;

/// The body of `POST /v1/enroll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The code `jsacc enroll create` printed.
    pub code: String,
    /// The machine's name, for the audit trail.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The node id the machine asks for (refused when the code names another).
    #[serde(default)]
    pub nid: Option<u64>,
}

/// The answer: the agent's identity and its token (shown only here).
#[derive(Debug, Serialize)]
pub struct EnrollAnswer {
    pub gid: u64,
    pub nid: u64,
    pub roles: Vec<String>,
    pub token: String,
}

/// Gives the body of an enrollment the deadline of authenticated agents' bodies
/// (`--body-timeout`): its size is bounded by the router's [`super::NO_BODY`] limit.
pub async fn bounded(State(api): State<Api>, req: Request, next: Next) -> Response {
    let timeout = api.state.config.body_timeout;
    next.run(req.map(|body| super::auth::deadline(body, timeout)))
        .await
}

/// `POST /v1/enroll` `{"code", "hostname"?, "nid"?}` → 200 `{"gid", "nid", "roles", "token"}`.
pub async fn enroll(
    State(api): State<Api>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrollAnswer>, AppError> {
    let asked = parse_enroll(&raw?)?;
    // The writes (the code's use, the node, its token) are confirmed by the replicas before the
    // token is given, like every durable write: a failover right after cannot lose it unseen.
    let mut conn = api.state.durable().await?;
    let enrolled = enroll::redeem(&mut conn, &asked.code, asked.nid, schemas::now_ms())
        .await
        .map_err(refusal)?;
    let from = match (peer, &asked.hostname) {
        (Some(Extension(ConnectInfo(a))), Some(h)) => format!("{a} ({h})"),
        (Some(Extension(ConnectInfo(a))), None) => a.to_string(),
        (None, Some(h)) => h.clone(),
        (None, None) => "unknown".to_owned(),
    };
    let who = format!("enroll:{}", enrolled.code_prefix);
    let target = format!("agent {}:{}", enrolled.gid, enrolled.nid);
    let entry = crate::audit::Entry {
        who: &who,
        what: "enroll",
        target: &target,
        from: &from,
    };
    // The token exists now: a failed audit write must not lose it (the node would stay taken
    // with a token nobody has).
    if let Err(e) = crate::audit::record(&mut conn, &entry).await {
        tracing::error!(agent = %target, from = %from, who = %who, error = %e,
            "agent enrolled, but the audit entry was not written");
    }
    if let Err(e) = api.state.confirm(&mut conn, &written_keys()).await {
        tracing::error!(agent = %target, from = %from, error = %e,
            "agent enrolled, but the replicas did not confirm it; its token was not given");
        let message = format!(
            "{target} was enrolled, but Redis did not confirm the write in time ({e}), so its \
             token is not given: revoke it (jsacc token revoke --gid {} --nid {}) and enroll \
             with a new code",
            enrolled.gid, enrolled.nid
        );
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_replicated",
            message,
        ));
    }
    tracing::info!(agent = %target, from = %from, "agent enrolled");
    Ok(Json(EnrollAnswer {
        gid: enrolled.gid,
        nid: enrolled.nid,
        roles: enrolled.roles,
        token: enrolled.token,
    }))
}

/// The keys a redemption writes (confirmed with `WAIT` before answering).
fn written_keys() -> Vec<String> {
    [
        crate::keys::AUTH_ENROLL,
        crate::keys::AUTH_ENROLL_NIDS,
        crate::keys::AUTH_AGENTS,
        crate::keys::AUTH_ROLES,
        crate::keys::AUTH_VERSION,
        crate::keys::AUDIT,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Reads and checks the body of `POST /v1/enroll` (a pure function: fuzzed): one object whose
/// fields are of their types and in bounds; a refusal names the field.
pub fn parse_enroll(body: &[u8]) -> Result<EnrollRequest, Invalid> {
    let asked: EnrollRequest = intake::object(body, "enrollment")?;
    if asked.code.is_empty() || asked.code.len() > MAX_CODE {
        return Err(Invalid::bad_request(format!(
            "enrollment: code: 1 to {MAX_CODE} bytes, not {}",
            asked.code.len()
        )));
    }
    if let Some(h) = &asked.hostname {
        let printable = h.chars().all(|c| !c.is_control());
        if h.len() > MAX_HOSTNAME || !printable {
            return Err(Invalid::bad_request(format!(
                "enrollment: hostname: at most {MAX_HOSTNAME} bytes of printable characters"
            )));
        }
    }
    Ok(asked)
}

/// The answer to a code that does not enroll.
fn refusal(e: EnrollError) -> AppError {
    let e = match e {
        EnrollError::Redis(r) => return AppError::from(r),
        other => other,
    };
    let (status, code) = match &e {
        EnrollError::Unknown => (StatusCode::FORBIDDEN, "unknown_code"),
        EnrollError::Expired => (StatusCode::FORBIDDEN, "expired_code"),
        EnrollError::Used => (StatusCode::FORBIDDEN, "used_code"),
        EnrollError::OtherNid { .. } => (StatusCode::FORBIDDEN, "other_nid"),
        EnrollError::Enrolled(_) => (StatusCode::CONFLICT, "enrolled"),
        EnrollError::NoFreeNid(_) => (StatusCode::CONFLICT, "no_free_nid"),
        // Not answers of a redemption (and Redis errors, answered above).
        EnrollError::TooMany(_)
        | EnrollError::NoSuchPrefix(_)
        | EnrollError::Ambiguous(_)
        | EnrollError::Redis(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    AppError::new(status, code, e.to_string())
}

#[cfg(test)]
mod tests;
