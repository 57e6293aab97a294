//! A session's delivery bookkeeping as a state machine with no IO: what a hub has written
//! to one device, and so what that device may acknowledge and where a replay resumes.
//!
//! The log reaches a device two ways: in cursor order (a replay from the log, then the
//! live entries after it), and emergencies written ahead of that order when older entries
//! are still on their way, marked `"ahead": true` so the device does not resume from
//! their cursor (docs/protocol.md, "Cursors, epochs and replay"). `watermark` is the
//! cursor up to which everything the device may see has been written in order;
//! `sent_above` the emergencies already written beyond it, which the ordered stream then
//! skips. The engine's session feeds this the events and writes what it says; the tests
//! below run it against a simulated device on every interleaving proptest finds.

use std::collections::BTreeSet;

use crate::ids::Cursor;

/// What to do with a live log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// The device has it already (in order, or sent ahead): write nothing.
    Skip,
    /// Write it marked `"ahead": true`: older entries are still on their way.
    Ahead,
    /// Write it as it is: it is next in order.
    InOrder,
}

#[derive(Debug, Default)]
pub struct Delivery {
    watermark: Cursor,
    sent_above: BTreeSet<Cursor>,
}

impl Delivery {
    /// A device that holds everything up to `watermark` (where its replay starts).
    pub fn new(watermark: Cursor) -> Self {
        Self { watermark, sent_above: BTreeSet::new() }
    }

    /// Everything this device may see up to here has been written to it in order.
    pub fn watermark(&self) -> Cursor {
        self.watermark
    }

    /// A live entry at `cursor`. `urgent`: it is an emergency; `behind`: older entries
    /// are still queued for this device (a replay runs, or ordinary traffic waits).
    pub fn live(&mut self, cursor: Cursor, urgent: bool, behind: bool) -> Live {
        if cursor <= self.watermark || self.sent_above.remove(&cursor) {
            return Live::Skip;
        }
        if urgent && behind {
            self.sent_above.insert(cursor);
            return Live::Ahead;
        }
        self.watermark = cursor;
        self.forget_below_watermark();
        Live::InOrder
    }

    /// The next replayed entry, in cursor order: whether to write it (false: it went
    /// ahead already). Either way the device now holds everything up to it.
    pub fn replayed(&mut self, cursor: Cursor) -> bool {
        self.watermark = self.watermark.max(cursor);
        !self.sent_above.remove(&cursor)
    }

    /// A replay page's frames are all written and its scan ended at `scanned_to` (past
    /// entries this device may not see): the next page starts after it.
    pub fn page_written(&mut self, scanned_to: Cursor) {
        self.watermark = self.watermark.max(scanned_to);
    }

    /// The replay has caught up with the log.
    pub fn caught_up(&mut self) {
        self.forget_below_watermark();
    }

    /// What an `ack` from the device may count: only what was written in order (an
    /// emergency sent ahead does not vouch for the entries before it).
    pub fn clamp_ack(&self, cursor: Cursor) -> Cursor {
        cursor.min(self.watermark)
    }

    fn forget_below_watermark(&mut self) {
        let wm = self.watermark;
        while self.sent_above.first().is_some_and(|c| *c <= wm) {
            self.sent_above.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use proptest::prelude::*;

    use super::*;

    /// The device's side: what it received, and where it would resume (the highest cursor
    /// received in order, as a client keeps it).
    #[derive(Default)]
    struct Device {
        received: BTreeMap<u64, u32>,
        resume_from: u64,
    }

    impl Device {
        fn receive(&mut self, cursor: Cursor, ahead: bool) {
            *self.received.entry(cursor.0).or_default() += 1;
            if !ahead {
                self.resume_from = self.resume_from.max(cursor.0);
            }
        }
    }

    /// One step of the hub's world.
    #[derive(Debug, Clone)]
    enum Step {
        /// The next entry commits (an emergency or not) and is offered live.
        Commit { emergency: bool },
        /// The replay reads and writes its next page of at most this many entries.
        ReplayPage(usize),
        /// The device acknowledges what it would resume from.
        Ack,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                4 => any::<bool>().prop_map(|e| Step::Commit { emergency: e }),
                2 => (1usize..6).prop_map(Step::ReplayPage),
                1 => Just(Step::Ack),
            ],
            1..80,
        )
    }

    /// Runs a device that reconnects with `backlog` entries already in the log: its
    /// replay pages through them while new entries commit; ordinary live entries wait in
    /// its queue until the replay is over, emergencies do not.
    fn run(backlog: u64, steps: &[Step]) -> (Device, Delivery, u64) {
        let mut d = Delivery::new(Cursor(0));
        let mut device = Device::default();
        let mut head = backlog;
        let mut emergencies = BTreeSet::new();
        let mut replaying = true;
        let mut queued: VecDeque<u64> = VecDeque::new();
        let mut acked = Cursor(0);
        let drain_queue = |d: &mut Delivery, device: &mut Device, queued: &mut VecDeque<u64>| {
            while let Some(c) = queued.pop_front() {
                let behind = !queued.is_empty();
                match d.live(Cursor(c), false, behind) {
                    Live::Skip => {}
                    Live::Ahead => device.receive(Cursor(c), true),
                    Live::InOrder => device.receive(Cursor(c), false),
                }
            }
        };
        let all = steps.iter().cloned().chain(std::iter::repeat_n(Step::ReplayPage(5), 40));
        for step in all {
            match step {
                Step::Commit { emergency } => {
                    head += 1;
                    if emergency {
                        emergencies.insert(head);
                        let behind = replaying || !queued.is_empty();
                        match d.live(Cursor(head), true, behind) {
                            Live::Skip => {}
                            Live::Ahead => device.receive(Cursor(head), true),
                            Live::InOrder => device.receive(Cursor(head), false),
                        }
                    } else {
                        queued.push_back(head);
                        if !replaying {
                            drain_queue(&mut d, &mut device, &mut queued);
                        }
                    }
                }
                Step::ReplayPage(limit) if replaying => {
                    let from = d.watermark().0 + 1;
                    let until = (from + limit as u64 - 1).min(head);
                    for c in from..=until {
                        if d.replayed(Cursor(c)) {
                            device.receive(Cursor(c), false);
                        }
                    }
                    d.page_written(Cursor(until.max(d.watermark().0)));
                    if until == head {
                        d.caught_up();
                        replaying = false;
                        drain_queue(&mut d, &mut device, &mut queued);
                    }
                }
                Step::ReplayPage(_) => {}
                Step::Ack => {
                    let counted = d.clamp_ack(Cursor(device.resume_from));
                    assert!(counted >= acked, "acks never go back");
                    acked = counted;
                }
            }
        }
        (device, d, head)
    }

    proptest! {
        #[test]
        fn every_entry_reaches_the_device_once_and_its_resume_point_never_skips_one(
            backlog in 0u64..20,
            steps in steps(),
        ) {
            let (device, d, head) = run(backlog, &steps);
            for c in 1..=head {
                prop_assert_eq!(device.received.get(&c).copied(), Some(1), "entry {} written once", c);
            }
            // Resuming from its cursor, the device would miss nothing: all below it arrived.
            prop_assert!((1..=device.resume_from).all(|c| device.received.contains_key(&c)));
            // The hub's own mark never claims more than it wrote in order: past it there are
            // only emergencies that went ahead (a reconnect replays them, marked as such).
            prop_assert!(d.watermark() <= Cursor(head));
            prop_assert!(d.clamp_ack(Cursor(u64::MAX)) == d.watermark());
        }
    }

    #[test]
    fn an_emergency_during_a_replay_goes_ahead_and_the_replay_skips_it() {
        let mut d = Delivery::new(Cursor(0));
        assert_eq!(d.live(Cursor(9), true, true), Live::Ahead);
        assert_eq!(d.clamp_ack(Cursor(9)), Cursor(0), "an ack after the emergency vouches for nothing before it");
        assert!(d.replayed(Cursor(8)));
        assert!(!d.replayed(Cursor(9)), "written once, ahead");
        d.page_written(Cursor(9));
        d.caught_up();
        assert_eq!(d.live(Cursor(9), true, false), Live::Skip);
        assert_eq!(d.live(Cursor(10), true, false), Live::InOrder, "nothing behind it: in order");
        assert_eq!(d.clamp_ack(Cursor(12)), Cursor(10));
    }

    #[test]
    fn an_ordinary_live_entry_never_goes_ahead() {
        let mut d = Delivery::new(Cursor(5));
        assert_eq!(d.live(Cursor(3), false, false), Live::Skip, "held already");
        assert_eq!(d.live(Cursor(6), false, true), Live::InOrder);
        assert_eq!(d.watermark(), Cursor(6));
    }
}
