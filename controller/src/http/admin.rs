//! The operator API's administration (issue 13; role admin): accounts (`GET|POST /v1/users`,
//! `DELETE /v1/users/{name}`) and agent tokens (`POST /v1/tokens`,
//! `DELETE /v1/tokens/{gid}/{nid}`), as `jsacc user` and `jsacc token` do. Every change is
//! audited; a new token is in the answer only, once.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Operator;
use super::error::ErrorBody;
use super::{Api, AppError};
use crate::intake::{self, Invalid};
use crate::users::{self, Role};
use crate::{auth, keys};

/// Longest account name and role, in bytes.
const MAX_NAME: usize = 64;

/// An account as `GET /v1/users` shows it: never its token or the token's hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct Account {
    pub name: String,
    pub role: Role,
    /// When it was added, ms since the epoch.
    pub created: u64,
}

/// The answer to `GET /v1/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// By name.
    pub users: Vec<Account>,
}

/// `GET /v1/users`: every account (name, role, created); never a token or its hash.
#[utoipa::path(
    get, path = "/v1/users", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every account", body = UserList),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 403, description = "The account's role is not admin", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn list_users(
    State(api): State<Api>,
    admin: Operator,
) -> Result<Json<UserList>, AppError> {
    admin.require(Role::Admin, "listing accounts")?;
    let all = users::list(&mut api.state.conn()).await?;
    let users = all
        .into_iter()
        .map(|u| Account {
            name: u.name,
            role: u.role,
            created: u.created,
        })
        .collect();
    Ok(Json(UserList { users }))
}

/// The body of `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1 to 64 letters, digits, `-`, `_`, `.` or `@`.
    pub name: String,
    pub role: Role,
}

/// Reads and checks the body of `POST /v1/users` (a pure function: fuzzed); a refusal names
/// the field.
pub fn parse_new_user(body: &[u8]) -> Result<NewUser, Invalid> {
    let new: NewUser = intake::object(body, "account")?;
    if new.name.len() > MAX_NAME {
        return Err(Invalid::bad_request(format!(
            "account: name: at most {MAX_NAME} bytes, not {}",
            new.name.len()
        )));
    }
    users::check_name(&new.name)
        .map_err(|e| Invalid::bad_request(format!("account: name: {e}")))?;
    Ok(new)
}

/// The answer to `POST /v1/users`: the new account's token, shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewUserAnswer {
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// `POST /v1/users` `{"name", "role"}` → 201 `{"name", "role", "token"}` (shown only here).
#[utoipa::path(
    post, path = "/v1/users", tag = "admin", security(("bearer" = [])), request_body = NewUser,
    responses(
        (status = 201, description = "Added; its token is shown only here", body = NewUserAnswer),
        (status = 400, description = "Not a valid account", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 403, description = "The account's role is not admin", body = ErrorBody),
        (status = 409, description = "The account exists (revoke it first)", body = ErrorBody),
        (status = 413, description = "A body over the limit", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn add_user(
    State(api): State<Api>,
    admin: Operator,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    admin.require(Role::Admin, "adding an account")?;
    let new = parse_new_user(&raw?)?;
    let token = users::add(&mut api.state.conn(), &new.name, new.role)
        .await
        .map_err(|e| match e.downcast::<redis::RedisError>() {
            Ok(e) => AppError::from(e),
            Err(e) => AppError::new(StatusCode::CONFLICT, "exists", e.to_string()),
        })?;
    let target = format!("account {} ({})", new.name, new.role);
    admin.audit(&api, "user add", &target).await?;
    let answer = NewUserAnswer {
        name: new.name,
        role: new.role,
        token,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// An account's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountName {
    #[param(min_length = 1)]
    pub name: String,
}

/// `DELETE /v1/users/{name}` → 204; 404 when there is no such account.
#[utoipa::path(
    delete, path = "/v1/users/{name}", tag = "admin", security(("bearer" = [])),
    params(AccountName),
    responses(
        (status = 204, description = "Revoked, with its token"),
        (status = 400, description = "A path that does not parse", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 403, description = "The account's role is not admin", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn revoke_user(
    State(api): State<Api>,
    admin: Operator,
    path: Result<Path<AccountName>, PathRejection>,
) -> Result<StatusCode, AppError> {
    let Path(AccountName { name }) = path?;
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

/// The body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub gid: u64,
    pub nid: u64,
    /// The agent's roles (a role is what a command's `role` picks agents by).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Reads and checks the body of `POST /v1/tokens` (a pure function: fuzzed); a refusal names
/// the field (and the role, by its index).
pub fn parse_new_token(body: &[u8]) -> Result<NewToken, Invalid> {
    let new: NewToken = intake::object(body, "token request")?;
    for (i, role) in new.roles.iter().enumerate() {
        if role.len() > MAX_NAME {
            return Err(Invalid::bad_request(format!(
                "token request: roles[{i}]: at most {MAX_NAME} bytes, not {}",
                role.len()
            )));
        }
        auth::check_role(role)
            .map_err(|e| Invalid::bad_request(format!("token request: roles[{i}]: {e}")))?;
    }
    Ok(new)
}

/// The answer to `POST /v1/tokens`: the agent's new token, shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewTokenAnswer {
    /// "gid:nid".
    pub agent: String,
    pub roles: Vec<String>,
    pub token: String,
}

/// `POST /v1/tokens` `{"gid", "nid", "roles"}` → 201 `{"agent", "roles", "token"}`: a new token
/// for the agent, replacing its old one (shown only here).
#[utoipa::path(
    post, path = "/v1/tokens", tag = "admin", security(("bearer" = [])),
    request_body = NewToken,
    responses(
        (status = 201, description = "Minted; shown only here", body = NewTokenAnswer),
        (status = 400, description = "Not a valid token request", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 403, description = "The account's role is not admin", body = ErrorBody),
        (status = 413, description = "A body over the limit", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn add_token(
    State(api): State<Api>,
    admin: Operator,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    admin.require(Role::Admin, "minting an agent token")?;
    let new = parse_new_token(&raw?)?;
    let token = auth::add(&mut api.state.conn(), new.gid, new.nid, &new.roles).await?;
    let agent = keys::agent_id(new.gid, new.nid);
    admin
        .audit(&api, "token add", &format!("agent {agent}"))
        .await?;
    let answer = NewTokenAnswer {
        agent,
        roles: new.roles,
        token,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `DELETE /v1/tokens/{gid}/{nid}` → 204; 404 when the agent has no token.
#[utoipa::path(
    delete, path = "/v1/tokens/{gid}/{nid}", tag = "admin", security(("bearer" = [])),
    params(super::fleet::AgentId),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "gid or nid is not an integer", body = ErrorBody),
        (status = 401, description = "No valid operator token", body = ErrorBody),
        (status = 403, description = "The account's role is not admin", body = ErrorBody),
        (status = 404, description = "The agent has no token", body = ErrorBody),
        (status = 500, description = "Redis refused the request", body = ErrorBody),
        (status = 503, description = "Redis is unavailable; retry later", body = ErrorBody),
    ),
)]
pub async fn revoke_token(
    State(api): State<Api>,
    admin: Operator,
    path: Result<Path<super::fleet::AgentId>, PathRejection>,
) -> Result<StatusCode, AppError> {
    let Path(super::fleet::AgentId { gid, nid }) = path?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused<T: std::fmt::Debug>(parsed: Result<T, Invalid>) -> String {
        let e = parsed.expect_err("refused");
        assert_eq!(e.code, "bad_request");
        e.message
    }

    #[test]
    fn a_new_account_is_read() {
        let new = parse_new_user(br#"{"name": "otto@ops", "role": "operator"}"#).unwrap();
        assert_eq!((new.name.as_str(), new.role), ("otto@ops", Role::Operator));
    }

    #[test]
    fn a_bad_account_is_refused_naming_the_field() {
        let long = format!(r#"{{"name": "{}", "role": "admin"}}"#, "a".repeat(5000));
        let cases = [
            ("{not json", "account: not JSON"),
            (r#"["otto", "admin"]"#, "account: expected a JSON object"),
            (
                r#"{"name": 5, "role": "admin"}"#,
                "account: name: invalid type",
            ),
            (
                r#"{"name": "otto", "role": 1e300}"#,
                "account: role: invalid type",
            ),
            (
                r#"{"name": "otto", "role": "root"}"#,
                "account: role: unknown variant",
            ),
            (r#"{"name": "otto"}"#, "account: missing field `role`"),
            (r#"{"role": "admin"}"#, "account: missing field `name`"),
            (
                r#"{"name": "o", "role": "admin", "x": 1}"#,
                "account: x: unknown field `x`",
            ),
            (
                r#"{"name": "", "role": "admin"}"#,
                "account: name: account name ``",
            ),
            (
                r#"{"name": "a b", "role": "admin"}"#,
                "account: name: account name `a b`",
            ),
            (&long, "account: name: at most 64 bytes, not 5000"),
        ];
        for (body, start) in cases {
            let message = refused(parse_new_user(body.as_bytes()));
            assert!(message.starts_with(start), "{body:.80}: {message}");
            assert!(message.len() < 300, "{body:.80}: {message}");
        }
    }

    #[test]
    fn a_new_token_is_read() {
        let new = parse_new_token(br#"{"gid": 18446744073709551615, "nid": 0}"#).unwrap();
        assert_eq!((new.gid, new.nid, new.roles.len()), (u64::MAX, 0, 0));
        let new = parse_new_token(br#"{"gid": 1, "nid": 2, "roles": ["web", "db.1"]}"#).unwrap();
        assert_eq!(new.roles, ["web", "db.1"]);
    }

    #[test]
    fn a_bad_token_request_is_refused_naming_the_field() {
        let long = format!(
            r#"{{"gid": 1, "nid": 1, "roles": ["{}"]}}"#,
            "r".repeat(3000)
        );
        let cases = [
            ("", "token request: not JSON"),
            ("\u{0}\u{1}garbage", "token request: not JSON"),
            ("[1, 2, []]", "token request: expected a JSON object"),
            (
                r#"{"gid": "1", "nid": 1}"#,
                "token request: gid: invalid type: string",
            ),
            (
                r#"{"gid": 1, "nid": -1}"#,
                "token request: nid: invalid value: integer `-1`",
            ),
            (
                r#"{"gid": 18446744073709551616, "nid": 1}"#,
                "token request: gid: invalid type: floating point",
            ),
            (
                r#"{"gid": 1, "nid": 1.5}"#,
                "token request: nid: invalid type: floating point",
            ),
            (r#"{"gid": 1}"#, "token request: missing field `nid`"),
            (
                r#"{"gid": 1, "nid": 1, "roles": "web"}"#,
                "token request: roles: invalid type: string",
            ),
            (
                r#"{"gid": 1, "nid": 1, "roles": ["web", 7]}"#,
                "token request: roles[1]: invalid type: integer",
            ),
            (
                r#"{"gid": 1, "nid": 1, "roles": ["web", "a b"]}"#,
                "token request: roles[1]: role `a b`",
            ),
            (
                r#"{"gid": 1, "nid": 1, "roles": [""]}"#,
                "token request: roles[0]: role ``",
            ),
            (&long, "token request: roles[0]: at most 64 bytes, not 3000"),
            (
                r#"{"gid": 1, "nid": 1, "role": ["web"]}"#,
                "token request: role: unknown field `role`",
            ),
        ];
        for (body, start) in cases {
            let message = refused(parse_new_token(body.as_bytes()));
            assert!(message.starts_with(start), "{body:.80}: {message}");
            assert!(message.len() < 300, "{body:.80}: {message}");
        }
    }
}
