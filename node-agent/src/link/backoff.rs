//! Jittered exponential backoff for talking to the controller: 0.5 s, doubling, capped at 30 s
//! (docs/protocol.md "Agent retry rules"). Each delay is drawn from the upper half of the current
//! step, so agents that failed together do not all retry together.

use std::time::Duration;

use rand::Rng;

const FIRST: Duration = Duration::from_millis(500);
const CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { step: FIRST }
    }

    /// The next delay, in `[step/2, step]`; the step then doubles up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(CAP);
        let half = step / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Sleeps for the next delay.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Back to the first step, after a success.
    pub(crate) fn reset(&mut self) {
        self.step = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    async fn timed_wait(b: &mut Backoff) -> Duration {
        let start = Instant::now();
        b.wait().await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new();
        let mut expected = FIRST;
        for _ in 0..12 {
            let waited = timed_wait(&mut b).await;
            assert!(
                waited >= expected / 2 && waited <= expected,
                "{waited:?} for step {expected:?}"
            );
            expected = (expected * 2).min(CAP);
        }
        assert_eq!(expected, CAP);
        let waited = timed_wait(&mut b).await;
        assert!(waited >= CAP / 2 && waited <= CAP, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn reset_starts_over() {
        let mut b = Backoff::new();
        for _ in 0..5 {
            b.wait().await;
        }
        b.reset();
        assert!(timed_wait(&mut b).await <= FIRST);
    }

    #[test]
    fn delays_are_jittered() {
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| Backoff::new().next_delay()).collect();
        assert!(delays.len() > 1, "20 first delays were all equal");
    }
}
