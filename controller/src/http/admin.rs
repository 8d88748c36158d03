//! The operator API's administration (issue 13; role admin): accounts (`GET|POST /v1/users`,
//! `DELETE /v1/users/{name}`) and agent tokens (`POST /v1/tokens`,
//! `DELETE /v1/tokens/{gid}/{nid}`), as `jsacc user` and `jsacc token` do. Every change is
//! audited; a new token is in the answer only, once.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Operator;
use super::{Api, AppError};
use crate::users::{self, Role};
use crate::{auth, keys};

fn body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AppError> {
    serde_json::from_slice(&body?).map_err(|e| AppError::bad_request(format!("body: {e}")))
}

/// `GET /v1/users`: every account (name, role, created); never a token or its hash.
pub async fn list_users(State(api): State<Api>, admin: Operator) -> Result<Json<Value>, AppError> {
    admin.require(Role::Admin, "listing accounts")?;
    let all = users::list(&mut api.state.conn()).await?;
    let all: Vec<Value> = all
        .iter()
        .map(|u| json!({"name": u.name, "role": u.role, "created": u.created}))
        .collect();
    Ok(Json(json!({"users": all})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
}

/// `POST /v1/users` `{"name", "role"}` → 201 `{"name", "role", "token"}` (shown only here).
pub async fn add_user(
    State(api): State<Api>,
    admin: Operator,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    admin.require(Role::Admin, "adding an account")?;
    let new: NewUser = body(raw)?;
    users::check_name(&new.name).map_err(AppError::bad_request)?;
    let token = users::add(&mut api.state.conn(), &new.name, new.role)
        .await
        .map_err(|e| match e.downcast::<redis::RedisError>() {
            Ok(e) => AppError::from(e),
            Err(e) => AppError::new(StatusCode::CONFLICT, "exists", e.to_string()),
        })?;
    let target = format!("account {} ({})", new.name, new.role);
    admin.audit(&api, "user add", &target).await?;
    let answer = json!({"name": new.name, "role": new.role, "token": token});
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /v1/users/{name}` → 204; 404 when there is no such account.
pub async fn revoke_user(
    State(api): State<Api>,
    admin: Operator,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    admin.require(Role::Admin, "revoking an account")?;
    if !users::revoke(&mut api.state.conn(), &name).await? {
        let message = format!("no account `{name}`");
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_user",
            message,
        ));
    }
    admin
        .audit(&api, "user revoke", &format!("account {name}"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub gid: u64,
    pub nid: u64,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `POST /v1/tokens` `{"gid", "nid", "roles"}` → 201 `{"agent", "roles", "token"}`: a new token
/// for the agent, replacing its old one (shown only here).
pub async fn add_token(
    State(api): State<Api>,
    admin: Operator,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    admin.require(Role::Admin, "minting an agent token")?;
    let new: NewToken = body(raw)?;
    for role in &new.roles {
        auth::check_role(role).map_err(AppError::bad_request)?;
    }
    let token = auth::add(&mut api.state.conn(), new.gid, new.nid, &new.roles).await?;
    let agent = keys::agent_id(new.gid, new.nid);
    admin
        .audit(&api, "token add", &format!("agent {agent}"))
        .await?;
    let answer = json!({"agent": agent, "roles": new.roles, "token": token});
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /v1/tokens/{gid}/{nid}` → 204; 404 when the agent has no token.
pub async fn revoke_token(
    State(api): State<Api>,
    admin: Operator,
    Path((gid, nid)): Path<(u64, u64)>,
) -> Result<StatusCode, AppError> {
    admin.require(Role::Admin, "revoking an agent token")?;
    let agent = keys::agent_id(gid, nid);
    if !auth::revoke(&mut api.state.conn(), gid, nid).await? {
        let message = format!("agent {agent} has no token");
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            message,
        ));
    }
    admin
        .audit(&api, "token revoke", &format!("agent {agent}"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
