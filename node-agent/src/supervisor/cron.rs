//! Cron jobs' place in their schedule (`args.cron`, `args.tz`; see `supervise.rs`).
//!
//! A cron job's runs are due at its schedule's times, computed on the wall clock in UTC (the
//! zone is the schedule's business) and waited for with `tokio::time`. A run is for one cron
//! time; the times that pass while it is still going are skipped, never run late or alongside
//! it, and counted: the count goes into that run's result (`skipped`) and a warning. The next
//! run is for the first cron time after the run ended.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use schemas::Schedule;
use tokio::time::Instant;

/// The wait for a schedule that has no more times (none before the year 5000): the job waits,
/// killable, instead of ending by itself.
const NEVER: Duration = Duration::from_secs(schemas::args::MAX_SECONDS);

/// The wall clock cron times are read on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    utc: DateTime<Utc>,
    at: Instant,
}

impl WallClock {
    pub(crate) fn new() -> WallClock {
        WallClock {
            utc: Utc::now(),
            at: Instant::now(),
        }
    }

    /// Now: the system clock in the agent. In unit tests, the clock's creation time plus the
    /// tokio time since, so that tests on paused time move it as they advance.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        if cfg!(test) {
            let elapsed = TimeDelta::from_std(self.at.elapsed()).unwrap_or(TimeDelta::MAX);
            self.utc.checked_add_signed(elapsed).unwrap_or(self.utc)
        } else {
            Utc::now()
        }
    }
}

/// Where a cron job is in its schedule.
#[derive(Debug)]
pub(super) struct CronRuns {
    schedule: Schedule,
    clock: WallClock,
    /// The cron time the next (or current) run is for.
    due: Option<DateTime<Utc>>,
}

impl CronRuns {
    pub(super) fn new(schedule: Schedule, clock: WallClock) -> CronRuns {
        CronRuns {
            schedule,
            clock,
            due: None,
        }
    }

    /// Moves to the first cron time after now (and after the current one, should the wall
    /// clock have stepped back), and returns the wait until it.
    pub(super) fn advance(&mut self) -> Duration {
        self.advance_from(self.clock.now())
    }

    /// Ends the current run: counts the cron times that passed after its own, while it ran (or
    /// waited for a slot), which are skipped, and moves to the first time after now. One
    /// reading of the clock serves both, so that every time is either counted or still ahead,
    /// however long the caller takes before it waits (storing the run's result, say).
    pub(super) fn end_run(&mut self) -> (u64, Duration) {
        let now = self.clock.now();
        let skipped = self
            .due
            .map_or(0, |due| self.schedule.count_between(due, now));
        (skipped, self.advance_from(now))
    }

    fn advance_from(&mut self, now: DateTime<Utc>) -> Duration {
        let from = self.due.map_or(now, |due| due.max(now));
        self.due = self.schedule.next_after(from);
        match self.due {
            Some(due) => (due - now).to_std().unwrap_or(Duration::ZERO),
            None => NEVER,
        }
    }

    /// The cron time the next (or current) run is for.
    #[cfg(test)]
    pub(super) fn due(&self) -> Option<DateTime<Utc>> {
        self.due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(expr: &str, tz: &str) -> CronRuns {
        CronRuns::new(Schedule::parse(expr, tz).unwrap(), WallClock::new())
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_on_a_cron_time() {
        let mut cron = runs("*/10 * * * * *", "UTC");
        let wait = cron.advance();
        assert!(wait <= Duration::from_secs(10), "{wait:?}");
        tokio::time::sleep(wait).await;
        let due = cron.due().unwrap();
        assert_eq!(due.timestamp() % 10, 0, "{due}");
        assert!(cron.clock.now() >= due);
        // The next is 10 s on (less the timer's rounding up to whole ms).
        let (skipped, wait) = cron.end_run();
        assert_eq!(skipped, 0);
        assert!(
            wait > Duration::from_millis(9_998) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert_eq!(cron.due().unwrap(), due + TimeDelta::seconds(10));
    }

    #[tokio::test(start_paused = true)]
    async fn times_passed_during_a_run_are_skipped_and_counted() {
        let mut cron = runs("* * * * * *", "UTC");
        tokio::time::sleep(cron.advance()).await;
        let due = cron.due().unwrap();
        // The run takes 3.5 s: the times 1, 2 and 3 s after its own passed meanwhile.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let (skipped, wait) = cron.end_run();
        assert_eq!(skipped, 3);
        assert!(
            wait > Duration::from_millis(498) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(cron.due().unwrap(), due + TimeDelta::seconds(4));
    }

    #[test]
    fn a_schedule_with_no_more_times_waits_for_ever() {
        // The last 29th of February before the year 5000 has passed on this (test) clock.
        let schedule = Schedule::parse("0 0 29 2 *", "UTC").unwrap();
        let mut cron = CronRuns::new(schedule, WallClock::new());
        cron.due = Some(
            DateTime::parse_from_rfc3339("4996-02-29T00:00:00Z")
                .unwrap()
                .into(),
        );
        assert_eq!(cron.advance(), NEVER);
        assert_eq!(cron.due(), None);
    }
}
