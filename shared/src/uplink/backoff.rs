//! Reconnect policy: jittered exponential backoff, reset only after a stable connection.
//!
//! 1 s doubling to a 30 s cap, each delay drawn uniformly from its upper half ("equal
//! jitter") so a village's worth of hubs that lost the same uplink do not reconnect in
//! lock-step. A connection that drops within [`STABLE_AFTER`] does not reset the
//! sequence: a flapping modem must not be hammered every second.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(1);
pub const CAP: Duration = Duration::from_secs(30);
/// A connection that lasted this long counts as stable.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    initial: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::with(INITIAL, CAP)
    }
}

impl Backoff {
    /// The standard policy: 1 s doubling to 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another first delay and cap (configurable per hub).
    pub fn with(initial: Duration, cap: Duration) -> Self {
        Self { attempt: 0, initial, cap: cap.max(initial) }
    }

    /// The delay before the next attempt; `random` is any uniformly random number.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.initial.saturating_mul(1u32 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_millis(random % (span + 1))
    }

    /// Tells the policy how long the last connection lasted.
    pub fn connection_ended(&mut self, lasted: Duration) {
        if lasted >= STABLE_AFTER {
            self.attempt = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_to_the_cap() {
        let mut b = Backoff::new();
        let maxes: Vec<u64> = (0..8).map(|_| b.next_delay(u64::MAX).as_millis() as u64).collect();
        // With the largest random draw each delay is at most the ceiling.
        assert!(maxes[0] <= 1000 && maxes[1] <= 2000 && maxes[2] <= 4000);
        assert!(maxes.iter().all(|m| *m <= 30_000));
        let mut b = Backoff::new();
        let mins: Vec<u128> = (0..8).map(|_| b.next_delay(0).as_millis()).collect();
        assert_eq!(mins, vec![500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
    }

    #[test]
    fn only_a_stable_connection_resets() {
        let mut b = Backoff::new();
        for _ in 0..5 {
            b.next_delay(0);
        }
        b.connection_ended(Duration::from_secs(2));
        assert_eq!(b.next_delay(0), Duration::from_secs(15));
        b.connection_ended(STABLE_AFTER);
        assert_eq!(b.next_delay(0), Duration::from_millis(500));
    }

    proptest! {
        #[test]
        fn delays_stay_within_half_and_full_ceiling(draws in proptest::collection::vec(any::<u64>(), 1..40)) {
            let mut b = Backoff::new();
            for (i, r) in draws.into_iter().enumerate() {
                let ceiling = INITIAL.saturating_mul(1u32 << (i as u32).min(16)).min(CAP);
                let d = b.next_delay(r);
                prop_assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            }
        }
    }
}
