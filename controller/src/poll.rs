//! Long-polls (DESIGN §5.2). A parked poll holds no Redis connection: it waits on a [`Notify`]
//! that the one subscription of this instance to `jsacc:events` wakes when a command is queued
//! for its agent, and re-checks Redis every few seconds in case pub/sub missed a message.

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use schemas::{JobEvent, JobState};

use crate::backoff::{nap, Backoff};
use crate::keys;
use crate::redis_conn::Conn;
use crate::state::{AppState, Shared};

/// One long-poll request, after authentication.
pub struct PollRequest {
    pub agent: String,
    /// The hash of the token the poll came with: checked again before each look, so a token
    /// revoked while the poll was parked receives nothing more.
    pub token_hash: String,
    pub wait: Duration,
    pub max: usize,
    pub acks: Vec<String>,
}

/// Acknowledges, then hands out up to `max` commands, parking up to `wait` when there are none.
/// Returns the raw commands (empty: nothing arrived in time, or shutdown).
pub async fn poll(
    state: &Shared,
    mut req: PollRequest,
    shutdown: &CancellationToken,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let deadline = tokio::time::Instant::now() + req.wait.min(state.config.max_wait);
    let parked = state.waiters.park(&req.agent);
    let mut acks = std::mem::take(&mut req.acks);
    let mut first = true;
    loop {
        // Before each look but the first (the request's token was checked a moment ago).
        if !first && !still_allowed(state, &req).await? {
            tracing::info!(
                agent = req.agent,
                "token revoked while a poll was parked; released"
            );
            return Ok(vec![]);
        }
        first = false;
        // Ask to be woken before looking, so a command queued in between is not missed.
        let woken = parked.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let items = take(state, &req.agent, req.max, &acks).await?;
        acks.clear();
        if !items.is_empty() {
            mark_running(state, &req.agent, &items).await?;
            return Ok(items);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(vec![]);
        }
        let every = recheck_after(state.config.recheck, state.waiters.parked());
        let recheck = (now + every).min(deadline);
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep_until(recheck) => {}
            _ = shutdown.cancelled() => return Ok(vec![]),
        }
    }
}

/// Parked polls one instance looks at again a second, at most, on the timer that covers a
/// missed wake-up (rare: a lost subscription wakes every parked poll when it is back).
pub const RECHECKS_PER_SEC: usize = 500;

/// When a parked poll looks at its queue again though nothing woke it: after `recheck`, or
/// later when this instance holds so many parked polls that they would re-check more than
/// [`RECHECKS_PER_SEC`] a second (50,000 idle agents re-checking every 5 s cost Redis and the
/// controllers a core); spread by ±20% so polls parked together do not look together.
pub fn recheck_after(recheck: Duration, parked: usize) -> Duration {
    let spread = Duration::from_millis((parked * 1000 / RECHECKS_PER_SEC) as u64);
    recheck.max(spread).mul_f64(rand::random_range(0.8..1.2))
}

/// Whether the poll's token is still its agent's (revoked or replaced: no longer).
async fn still_allowed(state: &Shared, req: &PollRequest) -> redis::RedisResult<bool> {
    let verdict = state
        .tokens
        .verify_hash(&mut state.conn(), &req.agent, &req.token_hash)
        .await?;
    Ok(verdict == crate::auth::Verdict::Allowed)
}

/// Runs `poll.lua`: settles acks and expired leases, moves up to `max` commands to delivered.
pub async fn take(
    state: &Shared,
    agent: &str,
    max: usize,
    acks: &[String],
) -> redis::RedisResult<Vec<Vec<u8>>> {
    take_on(state, &mut state.conn(), agent, max, acks).await
}

/// [`take`] on a given connection (a durable one, when its writes are then confirmed).
pub async fn take_on(
    state: &Shared,
    conn: &mut Conn,
    agent: &str,
    max: usize,
    acks: &[String],
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let mut invocation = state.scripts.poll.key(keys::agent_queue(agent));
    invocation
        .key(keys::agent_delivered(agent))
        .key(keys::agent_leases(agent))
        .key(keys::agent_inflight(agent))
        .key(keys::agent_expired(agent))
        .key(keys::agent_taken(agent))
        .key(keys::agent_popped(agent))
        .arg(schemas::now_ms())
        .arg(state.config.lease.as_millis() as u64)
        .arg(max);
    for id in acks {
        invocation.arg(id);
    }
    invocation.invoke_async(conn).await
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// Jobs handed to an agent go from `QUEUED` to `RUNNING`, which `mark_running.lua` publishes:
/// one script for the whole poll on one server, one a job on a cluster (their records are in
/// different slots), run concurrently (the multiplexed connection pipelines them).
async fn mark_running(state: &Shared, agent: &str, items: &[Vec<u8>]) -> redis::RedisResult<()> {
    let (gid, nid) = keys::split_agent(agent);
    let now = schemas::now_ms();
    let marks: Vec<(String, String)> = items
        .iter()
        .filter_map(|i| serde_json::from_slice::<IdOnly>(i).ok())
        .map(|IdOnly { id }| {
            let key = keys::job(&id);
            let event = JobEvent {
                id,
                gid,
                nid,
                state: JobState::Running,
            };
            (key, event.to_json())
        })
        .collect();
    let per_script = if state.redis.one_server() {
        marks.len().max(1)
    } else {
        1
    };
    futures::future::try_join_all(marks.chunks(per_script).map(|chunk| {
        let mut conn = state.conn();
        let mut invocation = state.scripts.mark_running.prepare_invoke();
        invocation.arg(now).arg(keys::EVENTS);
        for (key, event) in chunk {
            invocation.key(key).arg(event);
        }
        async move { invocation.invoke_async::<i64>(&mut conn).await }
    }))
    .await?;
    Ok(())
}

/// Holds this instance's subscription to `jsacc:events` and wakes parked polls; reconnects
/// (waking every parked poll, since messages may have been missed) until `shutdown`.
pub async fn subscribe(state: AppState, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        match listen(&state, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                let pause = backoff.pause();
                tracing::warn!(error = %e, retry_in = ?pause, "event subscription lost");
                state.waiters.wake_all();
                if !nap(pause, &shutdown).await {
                    return;
                }
            }
        }
    }
}

async fn listen(state: &Shared, shutdown: &CancellationToken) -> redis::RedisResult<()> {
    let mut messages = state.redis.subscribe(keys::EVENTS).await?;
    state.waiters.wake_all();
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some(msg) = msg else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "subscription closed",
            )));
        };
        if let Ok(event) = serde_json::from_slice::<JobEvent>(&msg) {
            if event.state == JobState::Queued {
                state.waiters.wake(&keys::agent_id(event.gid, event.nid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use redis::AsyncCommands;

    use super::*;
    use crate::config::Config;
    use crate::testkit::{self, RedisServer};

    #[test]
    fn parked_polls_recheck_no_faster_than_the_budget_and_spread_out() {
        let five = Duration::from_secs(5);
        let within =
            |d: Duration, base: f64| d.as_secs_f64() >= base * 0.8 && d.as_secs_f64() < base * 1.2;
        let few: Vec<Duration> = (0..200).map(|_| recheck_after(five, 10)).collect();
        assert!(few.iter().all(|&d| within(d, 5.0)), "{few:?}");
        assert!(few.iter().any(|&d| d != few[0]), "spread, not all at once");
        // 50,000 parked on one instance: 100 s apart each, RECHECKS_PER_SEC in all.
        let many = recheck_after(five, 50_000);
        assert!(within(many, 50_000.0 / RECHECKS_PER_SEC as f64), "{many:?}");
    }

    /// `poll.lua` writes a batch's delivery at once and settles a poll's acknowledgements
    /// together: every copy of a command queued twice (a routing replay) is delivered, and an
    /// acknowledged id leaves the delivered list, `inflight` and the leases, others stay.
    #[tokio::test]
    async fn a_batch_is_delivered_and_its_acknowledgements_settled_together() {
        let server = RedisServer::start();
        let state = testkit::state(&server, Config::default()).await;
        let agent = "1:1";
        let mut conn = state.conn();
        let cmd = |id: &str| format!(r#"{{"id":"{id}","gid":1,"nid":1,"cmd":"ping"}}"#);
        for raw in [cmd("a"), cmd("b"), cmd("b"), cmd("c")] {
            let _: () = conn.lpush(keys::agent_queue(agent), raw).await.unwrap();
        }
        let taken = take(&state, agent, 10, &[]).await.unwrap();
        let ids: Vec<String> = taken
            .iter()
            .map(|t| serde_json::from_slice::<IdOnly>(t).unwrap().id)
            .collect();
        assert_eq!(ids, ["a", "b", "b", "c"], "oldest first, every copy");
        let delivered: Vec<String> = conn
            .lrange(keys::agent_delivered(agent), 0, -1)
            .await
            .unwrap();
        assert_eq!(delivered.len(), 4);
        let leases: Vec<String> = conn.zrange(keys::agent_leases(agent), 0, -1).await.unwrap();
        assert_eq!(leases, ["a", "b", "c"]);

        let acks = [
            "b".to_owned(),
            "a".to_owned(),
            "b".to_owned(),
            "gone".to_owned(),
        ];
        assert!(take(&state, agent, 10, &acks).await.unwrap().is_empty());
        let delivered: Vec<String> = conn
            .lrange(keys::agent_delivered(agent), 0, -1)
            .await
            .unwrap();
        assert_eq!(delivered, [cmd("c")]);
        let inflight: Vec<String> = conn.hkeys(keys::agent_inflight(agent)).await.unwrap();
        assert_eq!(inflight, ["c"]);
        let leases: Vec<String> = conn.zrange(keys::agent_leases(agent), 0, -1).await.unwrap();
        assert_eq!(leases, ["c"]);
    }
}
