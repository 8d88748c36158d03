//! The one retry pause of the controller's loops (routing, the event subscription): doubling
//! from a first pause up to a ceiling, back to the first after a success.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next try; each call doubles the one after, up to the ceiling.
    pub fn pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// After a success: the next failure pauses the first pause again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Sleeps `pause`, or less when `shutdown` comes first; whether the whole pause was slept.
pub async fn nap(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => true,
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        let pauses: Vec<_> = (0..4).map(|_| b.pause()).collect();
        assert_eq!(pauses, [ms(100), ms(200), ms(350), ms(350)]);
        b.reset();
        assert_eq!(b.pause(), ms(100));
    }
}
