//! The jobs whose live output the controller takes no more: the `stop` of its answers
//! ([`schemas::OutputAnswer`]), for a job whose `output:<id>` stream reached the controller's
//! cap, or a job it does not know or did not send to this agent.
//!
//! A stopped job stays stopped until the agent restarts, later runs of a recurring job
//! included: the controller's cap is per job, so what they print would be thrown away anyway.
//! The agent remembers at most [`REMEMBERED`] jobs, the oldest stop forgotten first; a job
//! forgotten while it still prints is forwarded again until the controller names it again.
//!
//! [`RecentIds`] is that bounded set; the uploader keeps one of its own for the jobs whose
//! refused output it already warned about.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, RwLock};

/// Most job ids a [`RecentIds`] holds.
pub(crate) const REMEMBERED: usize = 10_000;

/// A set of job ids bounded to [`REMEMBERED`] (or less, in tests): adding one more forgets the
/// one added first.
#[derive(Debug)]
pub(crate) struct RecentIds {
    ids: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    limit: usize,
}

impl Default for RecentIds {
    fn default() -> Self {
        RecentIds::with_limit(REMEMBERED)
    }
}

impl RecentIds {
    pub(crate) fn with_limit(limit: usize) -> RecentIds {
        RecentIds {
            ids: HashSet::new(),
            order: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Adds `id`; `true` if it was not there.
    pub(crate) fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= self.limit {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        let id: Arc<str> = id.into();
        self.ids.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

/// The agent-wide set of stopped jobs (cheap to clone): the uploader adds to it, the runs'
/// readers and the forwarder look into it.
#[derive(Clone, Default)]
pub(crate) struct StoppedJobs {
    /// A std lock: held only to look an id up or add one, never across an await. Readers look
    /// it up once per read of a job's output, and it changes rarely: a read-write lock.
    inner: Arc<RwLock<RecentIds>>,
}

impl StoppedJobs {
    pub(crate) fn contains(&self, job: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(job)
    }

    /// Stops the jobs named; answers those that were not stopped yet.
    pub(crate) fn stop<'a>(&self, jobs: &'a [String]) -> Vec<&'a str> {
        if jobs.is_empty() {
            return Vec::new();
        }
        let mut ids = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        jobs.iter()
            .map(String::as_str)
            .filter(|job| ids.insert(job))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_id_is_forgotten_first_and_memory_stays_bounded() {
        let mut ids = RecentIds::with_limit(3);
        assert!(ids.insert("a") && ids.insert("b") && ids.insert("c"));
        assert!(!ids.insert("a"), "already there");
        assert!(ids.insert("d"));
        assert!(!ids.contains("a") && ids.contains("b") && ids.contains("d"));
        for i in 0..1000 {
            ids.insert(&i.to_string());
        }
        assert_eq!((ids.order.len(), ids.ids.len()), (3, 3));
    }

    #[test]
    fn stop_answers_the_newly_stopped_jobs() {
        let stopped = StoppedJobs::default();
        let jobs = ["a".to_owned(), "b".to_owned()];
        assert_eq!(stopped.stop(&jobs), ["a", "b"]);
        assert_eq!(stopped.stop(&["b".into(), "c".into()]), ["c"]);
        assert!(stopped.contains("a") && !stopped.contains("x"));
    }
}
