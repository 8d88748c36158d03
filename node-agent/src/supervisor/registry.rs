//! The jobs the supervisor holds right now, by id — waiting for their turn or running — and how
//! a `kill` reaches each: a [`Claim`] left in its entry and a cancellation token that the task
//! owning the job watches.
//!
//! The registry holds no process and never ends a job itself: the job's own task does that,
//! and reports. A kill only *claims* the job (at most one claim per job, so a job is killed at
//! most once) and wakes its owner; the owner hands the claim back when it leaves
//! ([`Ticket::leave`]) and answers it with the job's final state. A job thus ends exactly one
//! way even when a kill races with its exit: whatever the owner saw first.
//!
//! A std mutex: it is held only to read or change an entry, never across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use schemas::JobState;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Where a held job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a slot (`max_jobs`) or its serial queue; it has not started.
    Queued,
    /// Its process was started.
    Running,
}

impl Phase {
    /// The word of the `kill` answer's `was` field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
        }
    }
}

/// A kill request left for a job's owner: who asked, and where to say how the job ended.
#[derive(Debug)]
pub(crate) struct Claim {
    /// The `kill` or `killall` command that asked.
    pub(crate) by: Killer,
    ended: oneshot::Sender<JobState>,
}

impl Claim {
    /// Tells the killer how the job ended (`KILLED`, or how it ended on its own first).
    pub(crate) fn answer(self, state: JobState) {
        // The killer may be gone (the agent is stopping); nobody is left to tell then.
        let _ = self.ended.send(state);
    }
}

/// The command that kills: its name (`kill`, `killall`) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Killer {
    pub(crate) cmd: String,
    pub(crate) id: String,
}

/// A job claimed by a kill, as the killer sees it.
#[derive(Debug)]
pub(crate) struct Killing {
    pub(crate) id: String,
    pub(crate) was: Phase,
    /// Resolves with the job's final state once its result is stored. An error means its owner
    /// went away without answering (the agent is stopping).
    pub(crate) ended: oneshot::Receiver<JobState>,
}

/// Why a job cannot be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KillRefused {
    #[error("no running or queued job `{0}` on this agent")]
    NotHeld(String),
    #[error("job `{id}` is being killed already, by {by} command `{by_id}`")]
    Claimed {
        id: String,
        by: String,
        by_id: String,
    },
}

/// The supervisor's table of held jobs; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    inner: Arc<Mutex<Table>>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
    next_seq: u64,
}

struct Entry {
    /// Order of registration: `killall` answers in the order the jobs came.
    seq: u64,
    phase: Phase,
    wake: CancellationToken,
    claim: Option<Claim>,
}

impl Registry {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds a new job, `Queued`. `None` if a job with that id is held already (the store lets
    /// an id in only once, so that is a bug upstream; the second job must not shadow the first).
    pub(crate) fn register(&self, id: &str) -> Option<Ticket> {
        let mut table = self.table();
        if table.entries.contains_key(id) {
            return None;
        }
        let seq = table.next_seq;
        table.next_seq += 1;
        let wake = CancellationToken::new();
        let entry = Entry {
            seq,
            phase: Phase::Queued,
            wake: wake.clone(),
            claim: None,
        };
        table.entries.insert(id.to_owned(), entry);
        Some(Ticket {
            registry: self.clone(),
            id: id.to_owned(),
            seq,
            wake,
            left: false,
        })
    }

    /// Claims job `id` for `by` and wakes its owner.
    pub(crate) fn kill(&self, id: &str, by: &Killer) -> Result<Killing, KillRefused> {
        let mut table = self.table();
        let entry = table
            .entries
            .get_mut(id)
            .ok_or_else(|| KillRefused::NotHeld(id.to_owned()))?;
        if let Some(claim) = &entry.claim {
            return Err(KillRefused::Claimed {
                id: id.to_owned(),
                by: claim.by.cmd.clone(),
                by_id: claim.by.id.clone(),
            });
        }
        Ok(claim(id, entry, by))
    }

    /// Claims every held job not claimed yet, in the order they came, and wakes their owners.
    pub(crate) fn kill_all(&self, by: &Killer) -> Vec<Killing> {
        let mut table = self.table();
        let mut unclaimed: Vec<(&String, &mut Entry)> = table
            .entries
            .iter_mut()
            .filter(|(_, e)| e.claim.is_none())
            .collect();
        unclaimed.sort_by_key(|(_, e)| e.seq);
        unclaimed
            .into_iter()
            .map(|(id, entry)| claim(id, entry, by))
            .collect()
    }

    /// Whether no job is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.table().entries.is_empty()
    }

    fn remove(&self, id: &str, seq: u64) -> Option<Claim> {
        let mut table = self.table();
        if table.entries.get(id).is_some_and(|e| e.seq == seq) {
            table.entries.remove(id).and_then(|e| e.claim)
        } else {
            None
        }
    }
}

fn claim(id: &str, entry: &mut Entry, by: &Killer) -> Killing {
    let (ended, answer) = oneshot::channel();
    entry.claim = Some(Claim {
        by: by.clone(),
        ended,
    });
    entry.wake.cancel();
    Killing {
        id: id.to_owned(),
        was: entry.phase,
        ended: answer,
    }
}

/// The owning task's side of a held job. Dropping it without [`Ticket::leave`] (the task was
/// cancelled) still takes the job out of the registry.
pub(crate) struct Ticket {
    registry: Registry,
    id: String,
    seq: u64,
    wake: CancellationToken,
    left: bool,
}

impl Ticket {
    /// Cancelled once a kill has claimed the job.
    pub(crate) fn killed(&self) -> &CancellationToken {
        &self.wake
    }

    /// Marks the job `Running`, unless a kill claimed it first: then it must not start (`false`).
    pub(crate) fn start(&self) -> bool {
        let mut table = self.registry.table();
        match table.entries.get_mut(&self.id) {
            Some(entry) if entry.seq == self.seq && entry.claim.is_none() => {
                entry.phase = Phase::Running;
                true
            }
            _ => false,
        }
    }

    /// Who claimed the job, if a kill did.
    pub(crate) fn killer(&self) -> Option<Killer> {
        let table = self.registry.table();
        let entry = table.entries.get(&self.id).filter(|e| e.seq == self.seq)?;
        entry.claim.as_ref().map(|c| c.by.clone())
    }

    /// Marks a job that runs again later as waiting (`Queued`) between its runs.
    pub(crate) fn idle(&self) {
        let mut table = self.registry.table();
        if let Some(entry) = table
            .entries
            .get_mut(&self.id)
            .filter(|e| e.seq == self.seq)
        {
            entry.phase = Phase::Queued;
        }
    }

    /// Takes back the claim of a kill that did not end the job (a `killall` reaching a
    /// remembered job, which comes back) and arms the job for the next kill; it waits
    /// (`Queued`) until its next run. The claim is to be answered by the caller.
    pub(crate) fn rearm(&mut self) -> Option<Claim> {
        let mut table = self.registry.table();
        let entry = table
            .entries
            .get_mut(&self.id)
            .filter(|e| e.seq == self.seq)?;
        self.wake = CancellationToken::new();
        entry.wake = self.wake.clone();
        entry.phase = Phase::Queued;
        entry.claim.take()
    }

    /// Takes the job out of the registry, once its ending is known and before its result is
    /// stored; from then on no kill can claim it. Returns the claim of a kill that came first,
    /// to be answered once the result is stored.
    pub(crate) fn leave(mut self) -> Option<Claim> {
        self.left = true;
        self.registry.remove(&self.id, self.seq)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.left {
            // A claim dropped here tells its killer the job went away without an answer.
            self.registry.remove(&self.id, self.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killer(id: &str) -> Killer {
        Killer {
            cmd: "kill".into(),
            id: id.into(),
        }
    }

    #[test]
    fn an_unknown_job_cannot_be_killed() {
        let r = Registry::default();
        assert_eq!(
            r.kill("x", &killer("k")).unwrap_err().to_string(),
            "no running or queued job `x` on this agent"
        );
    }

    #[tokio::test]
    async fn a_kill_claims_wakes_and_is_answered_once_the_job_leaves() {
        let r = Registry::default();
        let ticket = r.register("j").unwrap();
        let killing = r.kill("j", &killer("k")).unwrap();
        assert_eq!((killing.id.as_str(), killing.was), ("j", Phase::Queued));
        assert!(ticket.killed().is_cancelled());
        let claim = ticket.leave().unwrap();
        assert_eq!(claim.by, killer("k"));
        claim.answer(JobState::Killed);
        assert_eq!(killing.ended.await.unwrap(), JobState::Killed);
        assert!(r.is_empty());
    }

    #[test]
    fn a_job_is_claimed_at_most_once() {
        let r = Registry::default();
        let ticket = r.register("j").unwrap();
        assert!(ticket.start());
        let first = r.kill("j", &killer("k1")).unwrap();
        assert_eq!(first.was, Phase::Running);
        assert_eq!(
            r.kill("j", &killer("k2")).unwrap_err().to_string(),
            "job `j` is being killed already, by kill command `k1`"
        );
        assert!(r.kill_all(&killer("ka")).is_empty());
        drop(ticket.leave());
        assert!(matches!(
            r.kill("j", &killer("k3")),
            Err(KillRefused::NotHeld(_))
        ));
    }

    #[test]
    fn a_claimed_queued_job_does_not_start() {
        let r = Registry::default();
        let ticket = r.register("j").unwrap();
        let _killing = r.kill("j", &killer("k")).unwrap();
        assert!(!ticket.start());
    }

    #[test]
    fn kill_all_claims_every_job_in_the_order_they_came() {
        let r = Registry::default();
        let tickets: Vec<Ticket> = ["c", "a", "b"]
            .iter()
            .map(|id| r.register(id).unwrap())
            .collect();
        assert!(tickets[1].start());
        let all = r.kill_all(&killer("ka"));
        let got: Vec<(&str, Phase)> = all.iter().map(|k| (k.id.as_str(), k.was)).collect();
        assert_eq!(
            got,
            [
                ("c", Phase::Queued),
                ("a", Phase::Running),
                ("b", Phase::Queued)
            ]
        );
        assert!(tickets.iter().all(|t| t.killed().is_cancelled()));
    }

    #[tokio::test]
    async fn a_dropped_ticket_leaves_and_its_killer_hears_of_it() {
        let r = Registry::default();
        let ticket = r.register("j").unwrap();
        let killing = r.kill("j", &killer("k")).unwrap();
        drop(ticket);
        assert!(r.is_empty());
        assert!(killing.ended.await.is_err());
    }

    #[tokio::test]
    async fn a_rearmed_job_can_be_killed_again() {
        let r = Registry::default();
        let mut ticket = r.register("j").unwrap();
        assert!(ticket.start());
        let all = r.kill_all(&killer("ka"));
        assert_eq!(ticket.killer(), Some(killer("ka")));
        let claim = ticket.rearm().unwrap();
        claim.answer(JobState::Running);
        assert_eq!(
            all.into_iter().next().unwrap().ended.await.unwrap(),
            JobState::Running
        );
        assert!(
            !ticket.killed().is_cancelled(),
            "a new run must not start killed"
        );
        assert_eq!(ticket.killer(), None);
        let again = r.kill("j", &killer("k")).unwrap();
        assert_eq!(again.was, Phase::Queued);
        assert!(ticket.killed().is_cancelled());
    }

    #[test]
    fn a_second_job_with_a_held_id_is_refused() {
        let r = Registry::default();
        let _first = r.register("j").unwrap();
        assert!(r.register("j").is_none());
        assert_eq!(r.kill_all(&killer("ka")).len(), 1);
    }
}
