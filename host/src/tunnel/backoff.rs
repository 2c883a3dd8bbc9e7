//! Exponential backoff with full jitter, for agent reconnects.
//!
//! Each delay is drawn uniformly from `[0, min(max, initial * 2^attempt)]`, so a
//! fleet of agents that lost the hub at the same moment does not come back in
//! lockstep (no fixed delay anywhere).

use rand::Rng;
use std::time::Duration;

/// Reconnect delay generator.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling for the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, a random value up to the current ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Back to the first step, after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(&ceilings[..6], &[100, 200, 400, 800, 1600, 3200]);
        assert_eq!(*ceilings.last().unwrap(), 30_000);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
            for _ in 0..5 {
                b.next_delay();
            }
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling);
            seen.insert(d.as_micros());
        }
        // Full jitter: draws spread over the range rather than repeating one value.
        assert!(seen.len() > 150, "only {} distinct delays", seen.len());
    }
}
