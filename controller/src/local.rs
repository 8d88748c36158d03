//! What one instance keeps in memory, apart from Redis: parked polls, when it last recorded
//! each agent as seen, how often Redis refused each command, and whether its router is routing.
//! Nothing here is job state (that lives in Redis); losing it with the process loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often one instance writes an agent's `last_seen`.
pub const SEEN_EVERY: Duration = Duration::from_secs(5);

/// Parked polls, by agent ("gid:nid").
#[derive(Default)]
pub struct Waiters {
    // A std mutex: never held across an `.await`.
    map: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// The polls in `map`, counted as they park and leave: every poll reads it to pace its
    /// re-checks, and summing `map` would cost each of them O(agents) under the lock.
    parked: AtomicUsize,
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
        self.parked.fetch_add(1, Ordering::Relaxed);
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
        self.parked.load(Ordering::Relaxed)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&self.agent) {
            entry.1 -= 1;
            self.waiters.parked.fetch_sub(1, Ordering::Relaxed);
            if entry.1 == 0 {
                map.remove(&self.agent);
            }
        }
    }
}

/// When each agent's `last_seen` was last written by this instance.
#[derive(Default)]
pub struct Seen {
    // A std mutex: never held across an `.await`.
    at: Mutex<HashMap<String, Instant>>,
}

impl Seen {
    pub fn due(&self, agent_id: &str) -> bool {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        match at.get(agent_id) {
            Some(t) if t.elapsed() < SEEN_EVERY => false,
            _ => {
                at.insert(agent_id.to_owned(), Instant::now());
                true
            }
        }
    }
}

/// Failed tries per command (by the SHA-256 of its bytes), kept only until it is settled.
#[derive(Default)]
pub struct Poison {
    // A std mutex: never held across an `.await`.
    tries: Mutex<HashMap<[u8; 32], u32>>,
}

impl Poison {
    /// Counts one more failed try of `raw`; returns the count.
    pub fn tried(&self, raw: &[u8]) -> u32 {
        let mut tries = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        if tries.len() > 100_000 {
            tries.clear(); // only ever this large if something else is badly wrong
        }
        let n = tries.entry(Sha256::digest(raw).into()).or_insert(0);
        *n += 1;
        *n
    }

    pub fn forget(&self, raw: &[u8]) {
        let mut tries = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        if !tries.is_empty() {
            tries.remove(&<[u8; 32]>::from(Sha256::digest(raw)));
        }
    }
}

/// The router's last progress, for `/readyz`.
#[derive(Default)]
pub struct RouterHealth {
    running: AtomicBool,
    /// When the last routing step succeeded (ms since the epoch).
    last_ok: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// How long the router may go without a successful step before `/readyz` says it is stuck.
pub const ROUTER_STALL: Duration = Duration::from_secs(30);

impl RouterHealth {
    pub fn started(&self) {
        self.running.store(true, Ordering::Relaxed);
        self.last_ok.store(schemas::now_ms(), Ordering::Relaxed);
    }

    pub fn stepped(&self) {
        self.last_ok.store(schemas::now_ms(), Ordering::Relaxed);
    }

    pub fn failed(&self, e: &redis::RedisError) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }

    pub fn stopped(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    /// Why the router is not routing, if it is not.
    pub fn problem(&self) -> Option<String> {
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let error = error.unwrap_or_else(|| "no error recorded".into());
        if !self.running.load(Ordering::Relaxed) {
            return Some(format!("the router is not running (last error: {error})"));
        }
        let idle = schemas::now_ms().saturating_sub(self.last_ok.load(Ordering::Relaxed));
        (idle > ROUTER_STALL.as_millis() as u64).then(|| {
            format!(
                "the router has not completed a step for {} s (last error: {error})",
                idle / 1000
            )
        })
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
    #[test]
    fn tries_are_counted_per_command_until_forgotten() {
        let p = Poison::default();
        assert_eq!((p.tried(b"a"), p.tried(b"a"), p.tried(b"b")), (1, 2, 1));
        p.forget(b"a");
        assert_eq!(p.tried(b"a"), 1);
    }

    #[test]
    fn a_router_that_stopped_or_stalled_is_reported() {
        let h = RouterHealth::default();
        assert!(h.problem().is_some_and(|p| p.contains("not running")));
        h.started();
        assert_eq!(h.problem(), None);
        h.failed(&crate::redis_conn::not_replicated(1));
        let stalled = schemas::now_ms() - ROUTER_STALL.as_millis() as u64 - 1000;
        h.last_ok.store(stalled, Ordering::Relaxed);
        let problem = h.problem().expect("a stalled router");
        assert!(problem.contains("not completed a step") && problem.contains("not replicated"));
        h.stepped();
        assert_eq!(h.problem(), None);
        h.stopped();
        assert!(h.problem().is_some());
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
