//! Operator accounts (issue 13): `jsacc user add|list|revoke`. An account has a name, a role
//! and a token; only the token's SHA-256 is stored. `auth:users` maps a name to its record
//! (`{"role", "hash", "created"}`) and `auth:user_tokens` a token hash to its name, so a
//! presented token is found with one `HGET`.
//!
//! Roles, each allowing what the one before does and more: `viewer` reads everything,
//! `operator` also submits and kills jobs, `admin` also manages agent tokens and accounts.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth;
use crate::keys;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("role `{other}`: one of admin, operator, viewer")),
        }
    }
}

/// An account as stored in `auth:users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    #[serde(skip)]
    pub name: String,
    pub role: Role,
    /// SHA-256 of its token.
    pub hash: String,
    /// When it was added, ms since the epoch.
    pub created: u64,
}

/// Why an account name is refused.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "account name `{name}`: 1 to 64 letters, digits, `-`, `_`, `.` or `@`"
        )),
    }
}

/// A new operator token ("jso_" and 32 random bytes in hex).
pub fn new_token() -> String {
    format!("jso_{}", &auth::new_token()["jsa_".len()..])
}

/// Adds account `name` with `role`; returns its token. An existing name is refused (revoke it
/// first): a token is never replaced silently.
pub async fn add(
    conn: &mut impl redis::aio::ConnectionLike,
    name: &str,
    role: Role,
) -> anyhow::Result<String> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let token = new_token();
    let user = User {
        name: name.to_owned(),
        role,
        hash: auth::hash(&token),
        created: schemas::now_ms(),
    };
    let record = serde_json::to_string(&user)?;
    let added: i64 = redis::cmd("HSETNX")
        .arg(keys::AUTH_USERS)
        .arg(name)
        .arg(record)
        .query_async(conn)
        .await?;
    if added == 0 {
        anyhow::bail!("account `{name}` exists; `jsacc user revoke {name}` first to replace it");
    }
    redis::cmd("HSET")
        .arg(keys::AUTH_USER_TOKENS)
        .arg(&user.hash)
        .arg(name)
        .query_async::<()>(conn)
        .await?;
    Ok(token)
}

/// Every account, by name.
pub async fn list(conn: &mut impl redis::aio::ConnectionLike) -> redis::RedisResult<Vec<User>> {
    let all: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(keys::AUTH_USERS)
        .query_async(conn)
        .await?;
    let mut users: Vec<User> = all
        .into_iter()
        .filter_map(|(name, record)| {
            let mut user: User = serde_json::from_str(&record).ok()?;
            user.name = name;
            Some(user)
        })
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

/// Removes account `name` and its token; returns whether it existed.
pub async fn revoke(
    conn: &mut impl redis::aio::ConnectionLike,
    name: &str,
) -> redis::RedisResult<bool> {
    let record: Option<String> = redis::cmd("HGET")
        .arg(keys::AUTH_USERS)
        .arg(name)
        .query_async(conn)
        .await?;
    let Some(record) = record else {
        return Ok(false);
    };
    if let Ok(user) = serde_json::from_str::<User>(&record) {
        redis::cmd("HDEL")
            .arg(keys::AUTH_USER_TOKENS)
            .arg(&user.hash)
            .query_async::<()>(conn)
            .await?;
    }
    redis::cmd("HDEL")
        .arg(keys::AUTH_USERS)
        .arg(name)
        .query_async::<()>(conn)
        .await?;
    Ok(true)
}

/// Whether `token` has the form of an operator token ("jso_" and 64 hex digits): anything else
/// is refused without asking Redis.
pub fn well_formed(token: &str) -> bool {
    token
        .strip_prefix("jso_")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The account whose token is `token`, if any.
pub async fn verify(
    conn: &mut impl redis::aio::ConnectionLike,
    token: &str,
) -> redis::RedisResult<Option<User>> {
    if !well_formed(token) {
        return Ok(None);
    }
    let hash = auth::hash(token);
    let name: Option<String> = redis::cmd("HGET")
        .arg(keys::AUTH_USER_TOKENS)
        .arg(&hash)
        .query_async(conn)
        .await?;
    let Some(name) = name else { return Ok(None) };
    let record: Option<String> = redis::cmd("HGET")
        .arg(keys::AUTH_USERS)
        .arg(&name)
        .query_async(conn)
        .await?;
    let user = record
        .and_then(|r| serde_json::from_str::<User>(&r).ok())
        .filter(|u| u.hash == hash)
        .map(|mut u| {
            u.name = name;
            u
        });
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::RedisServer;

    #[test]
    fn roles_allow_what_the_ones_below_do() {
        assert!(Role::Admin.allows(Role::Operator) && Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator) && !Role::Operator.allows(Role::Admin));
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("admin, operator, viewer"));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("alice@ops").is_ok() && check_name("a.b-c_d").is_ok());
        for bad in ["", "a b", "a:b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_account_is_added_once_verified_by_its_token_and_revoked() {
        let server = RedisServer::start();
        let api = crate::testkit::api(&server).await;
        let mut conn = api.state.conn();
        let token = add(&mut conn, "alice", Role::Operator)
            .await
            .expect("added");
        assert!(token.starts_with("jso_"));
        let again = add(&mut conn, "alice", Role::Admin).await.unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        let alice = verify(&mut conn, &token).await.unwrap().expect("known");
        assert_eq!((alice.name.as_str(), alice.role), ("alice", Role::Operator));
        assert_eq!(verify(&mut conn, "jso_nope").await.unwrap(), None);
        let names: Vec<String> = list(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice"]);
        assert!(revoke(&mut conn, "alice").await.unwrap());
        assert!(!revoke(&mut conn, "alice").await.unwrap());
        assert_eq!(verify(&mut conn, &token).await.unwrap(), None);
        // Revoked: nothing of the token is left.
        let left: i64 = redis::cmd("HLEN")
            .arg(keys::AUTH_USER_TOKENS)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
