//! Long-polls (DESIGN §5.2). A parked poll holds no Redis connection: it waits on a [`Notify`]
//! that the one subscription of this instance to `jsacc:events` wakes when a command is queued
//! for its agent, and re-checks Redis every few seconds in case pub/sub missed a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::keys;
use crate::redis_conn::Conn;
use crate::state::{AppState, Shared};

/// Parked polls, by agent ("gid:nid").
#[derive(Default)]
pub struct Waiters {
    // A std mutex: never held across an `.await`.
    map: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

/// A registration in [`Waiters`]; unregisters on drop.
pub struct Parked<'a> {
    waiters: &'a Waiters,
    agent: String,
    pub notify: Arc<Notify>,
}

impl Waiters {
    pub fn park(&self, agent: &str) -> Parked<'_> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(agent.to_owned())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Parked {
            waiters: self,
            agent: agent.to_owned(),
            notify: entry.0.clone(),
        }
    }

    pub fn wake(&self, agent: &str) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = map.get(agent) {
            n.notify_waiters();
        }
    }

    pub fn wake_all(&self) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().for_each(|(n, _)| n.notify_waiters());
    }

    /// Number of polls parked right now.
    pub fn parked(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(|(_, c)| c).sum()
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&self.agent) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.agent);
            }
        }
    }
}

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
        let recheck = (now + state.config.recheck).min(deadline);
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep_until(recheck) => {}
            _ = shutdown.cancelled() => return Ok(vec![]),
        }
    }
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

/// Jobs handed to an agent go from `QUEUED` to `RUNNING`, which is published.
async fn mark_running(state: &Shared, agent: &str, items: &[Vec<u8>]) -> redis::RedisResult<()> {
    let (gid, nid) = crate::router::split_agent(agent);
    let ids: Vec<String> = items
        .iter()
        .filter_map(|i| serde_json::from_slice::<IdOnly>(i).ok())
        .map(|i| i.id)
        .collect();
    let changed = futures::future::try_join_all(ids.iter().map(|id| {
        let mut conn = state.conn();
        let invocation = state.scripts.mark_running.key(keys::job(id));
        async move { invocation.invoke_async::<i64>(&mut conn).await }
    }))
    .await?;
    let mut pipe = redis::pipe();
    let mut any = false;
    for (id, changed) in ids.iter().zip(changed) {
        if changed == 1 {
            any = true;
            let event = serde_json::json!({"id": id, "gid": gid, "nid": nid, "state": "RUNNING"});
            pipe.publish(keys::EVENTS, event.to_string()).ignore();
        }
    }
    if !any {
        return Ok(());
    }
    pipe.exec_async(&mut state.conn()).await
}

#[derive(Deserialize)]
struct Event {
    gid: u64,
    nid: u64,
    state: String,
}

/// Holds this instance's subscription to `jsacc:events` and wakes parked polls; reconnects
/// (waking every parked poll, since messages may have been missed) until `shutdown`.
pub async fn subscribe(state: AppState, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match listen(&state, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "event subscription lost");
                state.waiters.wake_all();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
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
        if let Ok(event) = serde_json::from_slice::<Event>(&msg) {
            if event.state == "QUEUED" {
                state.waiters.wake(&keys::agent_id(event.gid, event.nid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_polls_are_counted_and_released() {
        let w = Waiters::default();
        let a = w.park("1:1");
        let b = w.park("1:1");
        let c = w.park("1:2");
        assert_eq!(w.parked(), 3);
        drop(a);
        drop(c);
        assert_eq!(w.parked(), 1);
        drop(b);
        assert_eq!(w.parked(), 0);
    }

    #[tokio::test]
    async fn wake_reaches_an_enabled_waiter() {
        let w = Waiters::default();
        let p = w.park("1:1");
        let woken = p.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        w.wake("1:2");
        w.wake("1:1");
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .expect("woken");
    }
}
