//! Which of the cloud's addresses the hub dials, and how long it waits first: failover
//! between the nodes of a cloud that runs as several, and the way back to the first.
//! Pure: the caller measures how long a connection lasted and draws the random numbers.
//!
//! The rules (docs/uplink.md, "Several cloud addresses"):
//!
//! - The hub starts with the first address.
//! - When an attempt fails or a connection ends, it dials the next address (after the
//!   last, the first again) **at once**, until every address has had one attempt in this
//!   round; only then does it wait, for the reconnect backoff's next delay
//!   ([`Backoff`]). So a dead node costs the hub the time it takes to notice, not a
//!   backoff delay, while a hub whose own uplink is down still waits between rounds.
//! - A connection that lasted [`STABLE_AFTER`] starts a fresh round (and, as before,
//!   resets the backoff): a node that dies after serving for a while is replaced at once.
//!   One that drops sooner does not, so two flapping nodes are not dialled in a loop.
//! - While connected to any address but the first, the hub tries the first every
//!   `primary_retry`; once the first completes the handshake the hub moves back to it
//!   ([`Failover::back_to_first`]) and a fresh round starts there.
//!
//! With a single address every end waits for the backoff's next delay: the policy the
//! hub has always had.

use std::time::Duration;

use crate::uplink::backoff::{Backoff, STABLE_AFTER};

/// Where and when to dial next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// The address's position in the configured list.
    pub index: usize,
    /// How long to wait before dialling.
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub struct Failover {
    /// How many addresses there are (at least one).
    count: usize,
    /// The address dialled now or connected to.
    current: usize,
    /// Addresses still to be tried in this round before the hub waits.
    left_in_round: usize,
    backoff: Backoff,
    primary_retry: Duration,
}

impl Failover {
    /// A policy over `count` addresses (an empty list counts as one), waiting by
    /// `backoff` between rounds, trying the first address every `primary_retry` while
    /// on another.
    pub fn new(count: usize, backoff: Backoff, primary_retry: Duration) -> Self {
        let count = count.max(1);
        Self { count, current: 0, left_in_round: count - 1, backoff, primary_retry }
    }

    /// The address to dial now, or the one connected to.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The attempt on the current address ended: it failed, or the connection it made
    /// ended after `lasted` (counted from the start of the attempt). `random` is any
    /// uniformly random number (the backoff's jitter).
    pub fn ended(&mut self, lasted: Duration, random: u64) -> Next {
        self.backoff.connection_ended(lasted);
        if lasted >= STABLE_AFTER {
            self.left_in_round = self.count - 1;
        }
        self.current = (self.current + 1) % self.count;
        if self.left_in_round > 0 {
            self.left_in_round -= 1;
            return Next { index: self.current, delay: Duration::ZERO };
        }
        self.left_in_round = self.count - 1;
        Next { index: self.current, delay: self.backoff.next_delay(random) }
    }

    /// While connected: how often to try the first address, or `None` on the first.
    pub fn primary_retry(&self) -> Option<Duration> {
        (self.current != 0).then_some(self.primary_retry)
    }

    /// The first address completed a handshake while the hub was connected to another:
    /// the hub is on the first from now on, in a fresh round.
    pub fn back_to_first(&mut self) {
        self.current = 0;
        self.left_in_round = self.count - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RETRY: Duration = Duration::from_secs(300);
    const SHORT: Duration = Duration::from_secs(1);

    fn failover(count: usize) -> Failover {
        Failover::new(count, Backoff::new(), RETRY)
    }

    fn next(index: usize, delay_ms: u64) -> Next {
        Next { index, delay: Duration::from_millis(delay_ms) }
    }

    #[test]
    fn a_node_that_dies_after_serving_is_replaced_at_once_by_the_next() {
        let mut f = failover(3);
        assert_eq!(f.current(), 0);
        assert_eq!(f.ended(Duration::from_secs(3600), 0), next(1, 0));
        // The hub is on the second address; it dies after serving a while too.
        assert_eq!(f.ended(STABLE_AFTER, 0), next(2, 0));
        assert_eq!(f.ended(STABLE_AFTER, 0), next(0, 0), "after the last, the first again");
    }

    #[test]
    fn every_address_gets_one_attempt_before_the_hub_waits() {
        let mut f = failover(3);
        // The hub's own uplink is down: nothing answers anywhere.
        let round: Vec<Next> = (0..6).map(|_| f.ended(SHORT, 0)).collect();
        assert_eq!(round, [next(1, 0), next(2, 0), next(0, 500), next(1, 0), next(2, 0), next(0, 1000)]);
    }

    #[test]
    fn a_stable_connection_starts_a_fresh_round_and_resets_the_backoff() {
        let mut f = failover(2);
        for _ in 0..6 {
            f.ended(SHORT, 0);
        }
        assert_eq!(f.current(), 0);
        // Now the first address serves for a while and dies: the second at once, and
        // if that fails too, the backoff starts again from its first delay.
        assert_eq!(f.ended(Duration::from_secs(60), 0), next(1, 0));
        assert_eq!(f.ended(SHORT, 0), next(0, 500));
    }

    #[test]
    fn nodes_that_drop_their_connections_soon_are_not_dialled_in_a_loop() {
        let mut f = failover(2);
        // Each connection is made and lost within STABLE_AFTER.
        let waits: Vec<Duration> = (0..8).map(|_| f.ended(STABLE_AFTER - SHORT, 0).delay).collect();
        assert_eq!(waits.iter().filter(|d| d.is_zero()).count(), 4, "{waits:?}");
        assert!(waits.windows(2).all(|w| !(w[0].is_zero() && w[1].is_zero())), "{waits:?}");
    }

    #[test]
    fn the_first_address_is_tried_again_only_from_another() {
        let mut f = failover(3);
        assert_eq!(f.primary_retry(), None);
        f.ended(STABLE_AFTER, 0);
        assert_eq!(f.primary_retry(), Some(RETRY));
        f.ended(STABLE_AFTER, 0);
        assert_eq!((f.current(), f.primary_retry()), (2, Some(RETRY)));
        f.back_to_first();
        assert_eq!((f.current(), f.primary_retry()), (0, None));
        // A fresh round from the first: if it fails now, the others follow at once.
        assert_eq!(f.ended(SHORT, 0), next(1, 0));
        assert_eq!(f.ended(SHORT, 0), next(2, 0));
        assert_eq!(f.ended(SHORT, 0).index, 0);
    }

    #[test]
    fn one_address_never_looks_for_another() {
        let mut f = failover(1);
        f.ended(STABLE_AFTER, 0);
        assert_eq!((f.current(), f.primary_retry()), (0, None));
        // An empty list is treated as one address, not a division by zero.
        let mut f = failover(0);
        assert_eq!(f.ended(SHORT, 0).index, 0);
    }

    proptest! {
        /// With one address the policy is the backoff, delay for delay.
        #[test]
        fn one_address_is_exactly_the_backoff(ends in proptest::collection::vec((0u64..30_000, any::<u64>()), 1..40)) {
            let mut f = failover(1);
            let mut b = Backoff::new();
            for (lasted_ms, r) in ends {
                let lasted = Duration::from_millis(lasted_ms);
                b.connection_ended(lasted);
                prop_assert_eq!(f.ended(lasted, r), Next { index: 0, delay: b.next_delay(r) });
            }
        }

        /// Whatever happens, the hub visits the addresses in order and never dials more
        /// than `count` times in a row without waiting unless a connection was stable.
        #[test]
        fn rounds_are_bounded(count in 1usize..6, ends in proptest::collection::vec((0u64..20_000, any::<u64>()), 1..60)) {
            let mut f = failover(count);
            let mut at_once = 0;
            for (lasted_ms, r) in ends {
                let before = f.current();
                let lasted = Duration::from_millis(lasted_ms);
                let n = f.ended(lasted, r);
                prop_assert_eq!(n.index, (before + 1) % count);
                if lasted >= STABLE_AFTER {
                    at_once = 0;
                }
                if n.delay.is_zero() {
                    at_once += 1;
                    prop_assert!(at_once < count, "{at_once} attempts at once over {count} addresses");
                } else {
                    at_once = 0;
                }
            }
        }
    }
}
