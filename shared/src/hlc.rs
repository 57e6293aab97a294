//! Hybrid logical clock.
//!
//! A stamp packs milliseconds since the Unix epoch (upper 48 bits) with a logical
//! counter (lower 16 bits) into one `u64`, so stamps compare as plain integers and
//! sort the same on every replica. The clock never goes backwards even when the wall
//! clock does (a Pi without a real-time clock boots in 1970 until NTP or the uplink
//! arrives), and observing a remote stamp moves the clock past it, so a reply is always
//! stamped after what it answers.

use serde::{Deserialize, Serialize};

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
const PHYSICAL_MAX: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// One HLC stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Self((physical_ms.min(PHYSICAL_MAX) << LOGICAL_BITS) | u64::from(logical))
    }
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }
    pub fn logical(self) -> u16 {
        // Masked to 16 bits, so the conversion cannot fail.
        u16::try_from(self.0 & LOGICAL_MASK).unwrap_or(u16::MAX)
    }
    /// The smallest stamp strictly greater than `self`.
    fn successor(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

/// The clock state of one replica.
#[derive(Debug, Clone, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that will never issue a stamp at or below `last` (restore it from storage).
    pub fn starting_after(last: Hlc) -> Self {
        Self { last }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A stamp for a local event at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let wall = Hlc::new(now_ms, 0);
        self.last = if wall > self.last { wall } else { self.last.successor() };
        self.last
    }

    /// A stamp for a local event caused by (or answering) an event stamped `remote`.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Hlc {
        if remote > self.last {
            self.last = remote;
        }
        self.tick(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_fields() {
        let h = Hlc::new(1_700_000_000_000, 7);
        assert_eq!(h.physical_ms(), 1_700_000_000_000);
        assert_eq!(h.logical(), 7);
    }

    #[test]
    fn wall_clock_going_back_does_not_move_the_clock_back() {
        let mut c = HlcClock::default();
        let a = c.tick(10_000);
        let b = c.tick(5_000);
        assert!(b > a);
        assert_eq!(b.physical_ms(), 10_000);
        assert_eq!(b.logical(), 1);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Local { node: usize, now: u64 },
        Send { from: usize, to: usize, now: u64 },
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0usize..3, 0u64..1_000_000).prop_map(|(node, now)| Event::Local { node, now }),
            (0usize..3, 0usize..3, 0u64..1_000_000).prop_map(|(from, to, now)| Event::Send { from, to, now }),
        ]
    }

    proptest! {
        /// Every stamp a clock issues is greater than all it issued before (total, strict order
        /// per replica), and a received message's effect is stamped after the message
        /// (causality across replicas), whatever the wall clocks do.
        #[test]
        fn stamps_are_monotonic_and_respect_causality(events in proptest::collection::vec(event(), 1..200)) {
            let mut clocks = vec![HlcClock::default(); 3];
            let mut issued: Vec<Vec<Hlc>> = vec![Vec::new(); 3];
            for e in events {
                match e {
                    Event::Local { node, now } => {
                        let h = clocks[node].tick(now);
                        if let Some(prev) = issued[node].last() { prop_assert!(h > *prev); }
                        issued[node].push(h);
                    }
                    Event::Send { from, to, now } => {
                        let sent = clocks[from].tick(now);
                        if let Some(prev) = issued[from].last() { prop_assert!(sent > *prev); }
                        issued[from].push(sent);
                        let got = clocks[to].observe(sent, now / 2);
                        prop_assert!(got > sent, "receive must be after send");
                        if let Some(prev) = issued[to].last() { prop_assert!(got > *prev); }
                        issued[to].push(got);
                    }
                }
            }
        }

        #[test]
        fn ordering_is_integer_ordering(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(Hlc(a).cmp(&Hlc(b)), a.cmp(&b));
        }
    }
}
