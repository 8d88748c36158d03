//! Enrollment against a real redis-server: time is passed in (`now`), never slept.

use std::time::Duration;

use super::*;
use crate::redis_conn::Conn;
use crate::testkit::{self, RedisServer};

const NOW: u64 = 1_800_000_000_000;

async fn conn(server: &RedisServer) -> (crate::state::AppState, Conn) {
    let state = testkit::state(server, crate::config::Config::default()).await;
    let conn = state.conn();
    (state, conn)
}

fn grant(gid: u64, nid: Option<u64>, roles: &[&str], uses: u32) -> Grant {
    Grant {
        gid,
        nid,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ttl: DEFAULT_TTL,
        uses,
    }
}

async fn hget(conn: &mut Conn, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await
        .expect("HGET")
}

#[tokio::test]
async fn a_code_gives_one_token_with_its_node_and_roles_and_is_then_used() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    let code = create(&mut c, &grant(2, Some(7), &["web", "db"], 1), NOW)
        .await
        .unwrap();
    assert!(code.starts_with("jse_") && code.len() == 4 + 40, "{code}");
    // Only the hash is stored.
    let stored: Vec<String> = redis::cmd("HKEYS")
        .arg(keys::AUTH_ENROLL)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stored, [auth::hash(&code)]);
    let got = redeem(&mut c, &code, None, NOW + 1).await.unwrap();
    assert_eq!((got.gid, got.nid), (2, 7));
    assert_eq!(got.roles, ["web", "db"]);
    assert_eq!(
        hget(&mut c, keys::AUTH_AGENTS, "2:7").await,
        Some(auth::hash(&got.token))
    );
    assert_eq!(
        hget(&mut c, keys::AUTH_ROLES, "2:7").await.as_deref(),
        Some(r#"["web","db"]"#)
    );
    assert!(matches!(
        redeem(&mut c, &code, None, NOW + 2).await,
        Err(EnrollError::Used)
    ));
}

#[tokio::test]
async fn an_unknown_code_is_refused() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    assert!(matches!(
        redeem(&mut c, "jse_nope", None, NOW).await,
        Err(EnrollError::Unknown)
    ));
}

#[tokio::test]
async fn an_expired_code_is_refused_and_deleted() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    let mut g = grant(1, None, &[], 3);
    g.ttl = Duration::from_secs(60);
    let code = create(&mut c, &g, NOW).await.unwrap();
    assert!(redeem(&mut c, &code, None, NOW + 59_999).await.is_ok());
    assert!(matches!(
        redeem(&mut c, &code, None, NOW + 60_000).await,
        Err(EnrollError::Expired)
    ));
    assert_eq!(
        hget(&mut c, keys::AUTH_ENROLL, &auth::hash(&code)).await,
        None
    );
}

#[tokio::test]
async fn uses_are_counted() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    let code = create(&mut c, &grant(1, None, &[], 2), NOW).await.unwrap();
    let a = redeem(&mut c, &code, None, NOW).await.unwrap();
    let b = redeem(&mut c, &code, None, NOW).await.unwrap();
    assert_eq!((a.nid, b.nid), (1, 2));
    assert_ne!(a.token, b.token);
    assert!(matches!(
        redeem(&mut c, &code, None, NOW).await,
        Err(EnrollError::Used)
    ));
    // Used up, still listed (with no uses left) until it expires.
    let listed = list(&mut c, NOW).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record.uses, 0);
}

#[tokio::test]
async fn the_next_free_node_is_one_above_the_highest_of_the_grid() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    for (g, n) in [(3, 4), (3, 9), (4, 100)] {
        auth::add(&mut c, g, n, &[]).await.unwrap();
    }
    let code = create(&mut c, &grant(3, None, &[], 1), NOW).await.unwrap();
    assert_eq!(redeem(&mut c, &code, None, NOW).await.unwrap().nid, 10);
    // Asked for by the machine, when the code names none.
    let code = create(&mut c, &grant(3, None, &[], 1), NOW).await.unwrap();
    assert_eq!(redeem(&mut c, &code, Some(5), NOW).await.unwrap().nid, 5);
    let code = create(&mut c, &grant(5, None, &[], 1), NOW).await.unwrap();
    assert_eq!(redeem(&mut c, &code, None, NOW).await.unwrap().nid, 1);
}

#[tokio::test]
async fn a_revoked_node_id_is_never_handed_out_again() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    auth::add(&mut c, 1, 5, &[]).await.unwrap();
    let code = create(&mut c, &grant(1, None, &[], 3), NOW).await.unwrap();
    assert_eq!(redeem(&mut c, &code, None, NOW).await.unwrap().nid, 6);
    assert_eq!(redeem(&mut c, &code, None, NOW).await.unwrap().nid, 7);
    // 1:7, the highest, is revoked (commands may still be queued for it): the next machine
    // is 1:8, not a second 1:7.
    assert!(auth::revoke(&mut c, 1, 7).await.unwrap());
    assert_eq!(redeem(&mut c, &code, None, NOW).await.unwrap().nid, 8);
    // Tokens added by hand above the counter still push it up.
    auth::add(&mut c, 1, 20, &[]).await.unwrap();
    let code = create(&mut c, &grant(1, None, &[], 1), NOW).await.unwrap();
    assert_eq!(redeem(&mut c, &code, None, NOW).await.unwrap().nid, 21);
    assert_eq!(
        hget(&mut c, keys::AUTH_ENROLL_NIDS, "1").await.as_deref(),
        Some("21")
    );
}

#[test]
fn next_free_reads_only_its_grid() {
    let agents = ["1:5", "2:50", "1:12", "junk", "1:x", "10:99"];
    assert_eq!(next_free(1, agents.into_iter()), 13);
    assert_eq!(next_free(2, agents.into_iter()), 51);
    assert_eq!(next_free(7, agents.into_iter()), 1);
}

#[tokio::test]
async fn a_node_that_has_a_token_is_refused_without_spending_the_use() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    auth::add(&mut c, 1, 3, &[]).await.unwrap();
    let code = create(&mut c, &grant(1, Some(3), &[], 1), NOW)
        .await
        .unwrap();
    let refused = redeem(&mut c, &code, None, NOW).await;
    assert!(
        matches!(&refused, Err(EnrollError::Enrolled(a)) if a == "1:3"),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().to_string().contains("revoke it first"));
    auth::revoke(&mut c, 1, 3).await.unwrap();
    assert_eq!(redeem(&mut c, &code, None, NOW).await.unwrap().nid, 3);
}

#[tokio::test]
async fn a_code_for_one_node_is_refused_for_another() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    let code = create(&mut c, &grant(1, Some(3), &[], 1), NOW)
        .await
        .unwrap();
    assert!(matches!(
        redeem(&mut c, &code, Some(4), NOW).await,
        Err(EnrollError::OtherNid { code: 3, asked: 4 })
    ));
    assert_eq!(redeem(&mut c, &code, Some(3), NOW).await.unwrap().nid, 3);
}

#[tokio::test]
async fn of_concurrent_redemptions_of_a_one_use_code_one_wins() {
    let server = RedisServer::start();
    let (state, mut c) = conn(&server).await;
    let code = create(&mut c, &grant(1, None, &[], 1), NOW).await.unwrap();
    let tries = (0..8).map(|_| {
        let (mut conn, code) = (state.conn(), code.clone());
        tokio::spawn(async move { redeem(&mut conn, &code, None, NOW).await })
    });
    let outcomes = futures::future::join_all(tries).await;
    let won: Vec<_> = outcomes
        .into_iter()
        .map(|o| o.expect("no panic"))
        .filter_map(Result::ok)
        .collect();
    assert_eq!(won.len(), 1);
    let tokens: Vec<String> = redis::cmd("HVALS")
        .arg(keys::AUTH_AGENTS)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(tokens, [auth::hash(&won[0].token)]);
}

#[tokio::test]
async fn concurrent_enrollments_into_one_grid_get_distinct_nodes() {
    let server = RedisServer::start();
    let (state, mut c) = conn(&server).await;
    let code = create(&mut c, &grant(1, None, &["web"], 6), NOW)
        .await
        .unwrap();
    let tries = (0..6).map(|_| {
        let (mut conn, code) = (state.conn(), code.clone());
        tokio::spawn(async move { redeem(&mut conn, &code, None, NOW).await })
    });
    let mut nids: Vec<u64> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|o| o.expect("no panic").expect("enrolled").nid)
        .collect();
    nids.sort();
    assert_eq!(nids, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn list_shows_prefixes_only_and_drops_expired_codes() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    let mut short = grant(1, None, &[], 1);
    short.ttl = Duration::from_secs(10);
    let gone = create(&mut c, &short, NOW).await.unwrap();
    let kept = create(&mut c, &grant(2, Some(1), &["db"], 5), NOW + 1)
        .await
        .unwrap();
    assert_eq!(list(&mut c, NOW + 5).await.unwrap().len(), 2);
    let listed = list(&mut c, NOW + 10_000).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].prefix, auth::hash(&kept)[..PREFIX_LEN]);
    assert_eq!(listed[0].record.roles, ["db"]);
    assert_eq!(
        hget(&mut c, keys::AUTH_ENROLL, &auth::hash(&gone)).await,
        None
    );
}

#[tokio::test]
async fn revoke_takes_a_unique_prefix() {
    let server = RedisServer::start();
    let (_state, mut c) = conn(&server).await;
    let code = create(&mut c, &grant(1, None, &[], 1), NOW).await.unwrap();
    let prefix = &auth::hash(&code)[..8];
    assert!(matches!(
        revoke(&mut c, "000000", NOW).await,
        Err(EnrollError::NoSuchPrefix(_))
    ));
    assert_eq!(revoke(&mut c, prefix, NOW).await.unwrap().record.gid, 1);
    assert!(matches!(
        redeem(&mut c, &code, None, NOW).await,
        Err(EnrollError::Unknown)
    ));
    assert!(check_prefix("abc").is_err());
    assert!(check_prefix("zzzzzz").is_err());
    assert!(check_prefix("abcdef").is_ok());
}

#[test]
fn records_keep_uses_first_for_the_redeem_script() {
    let r = Record {
        uses: 3,
        gid: u64::MAX,
        nid: None,
        roles: vec![],
        expires: 2,
        created: 1,
    };
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.starts_with(r#"{"uses":3,"#), "{json}");
    assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
}
