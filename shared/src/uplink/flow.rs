//! The sending side of a link, as a state machine: which batches are in flight, how much
//! may be, and how far the peer has durably taken the log (the high-water mark).
//!
//! Entries are read from the log per lane (emergency, normal) in cursor order. Acks can
//! come back out of order (an emergency batch overtakes), so the high-water mark is the
//! lowest point still unacknowledged or unread: `min(lane positions, first cursor of
//! each unacked batch - 1)`. It only ever rises. After a reconnect the sender resumes from
//! it; anything above that the peer already had is deduplicated there by message id.
//!
//! Normal batches are limited to a window of about 1.25 × the measured bandwidth-delay
//! product (delivery rate from acks, max-filtered; RTT min-filtered), with a small floor,
//! so the link never holds a standing queue of our own making that a new emergency would
//! have to wait behind; batches are sized from the window so several are in flight.
//! Emergencies written since the link came up are not windowed; those that were already
//! waiting share the normal lane's window (see [`Queue`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::batch::Lane;
use crate::ids::Cursor;

#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// Target compressed size of one batch.
    pub max_batch_bytes: u64,
    /// Most normal batches in flight whatever the window says.
    pub max_inflight_batches: usize,
    /// Most emergency batches in flight.
    pub max_inflight_emergency: usize,
    /// How long a partial normal batch may wait for more entries.
    pub linger: Duration,
    /// The window before any measurement, and its floor: small enough not to build a
    /// standing queue on a 2G/EDGE link (EDGE's BDP is about 21 KB).
    pub min_window_bytes: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            max_batch_bytes: 32 * 1024,
            max_inflight_batches: 32,
            max_inflight_emergency: 64,
            linger: Duration::from_millis(500),
            min_window_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub lane: Lane,
    pub queue: Queue,
    pub first: Cursor,
    pub last: Cursor,
    pub bytes: u64,
    sent_at: Duration,
    delivered_at_send: u64,
}

/// Rate samples kept for the max filter.
const RATE_SAMPLES: usize = 16;

/// What the link delivers: a delivery-rate estimate (BBR-style samples: bytes delivered
/// between a send and its acknowledgement over the time between them, max-filtered) and
/// the smallest round trip seen. Their product is the bandwidth-delay product, the most
/// that can be in flight without a queue building in the network. The normal lane and
/// the media bulk lane each keep one.
#[derive(Debug, Clone, Default)]
pub struct Pipe {
    delivered: u64,
    rates: VecDeque<f64>,
    min_rtt: Option<Duration>,
}

impl Pipe {
    /// Bytes acknowledged so far (record it with each send).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// `bytes` sent at `sent_at` (when `delivered_at_send` had been delivered) are
    /// acknowledged at `now`.
    pub fn on_ack(&mut self, bytes: u64, sent_at: Duration, delivered_at_send: u64, now: Duration) {
        self.delivered += bytes;
        let elapsed = now.saturating_sub(sent_at);
        if !elapsed.is_zero() {
            let rate = (self.delivered - delivered_at_send) as f64 / elapsed.as_secs_f64();
            if self.rates.len() == RATE_SAMPLES {
                self.rates.pop_front();
            }
            self.rates.push_back(rate);
            self.min_rtt = Some(self.min_rtt.map_or(elapsed, |m| m.min(elapsed)));
        }
    }

    /// Measured bandwidth-delay product in bytes, if there are samples.
    pub fn bdp(&self) -> Option<u64> {
        let rate = self.rates.iter().copied().fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))?;
        let rtt = self.min_rtt?;
        Some((rate * rtt.as_secs_f64()) as u64)
    }

    /// Bytes allowed in flight: 1.25 × the bandwidth-delay product (the headroom lets the
    /// max-filtered rate grow until the link is full), never below `floor`.
    pub fn window(&self, floor: u64) -> u64 {
        self.bdp().map_or(floor, |bdp| (bdp + bdp / 4).max(floor))
    }
}

/// Where the sender reads its next batch from, in order of preference.
///
/// Emergencies are split in two. Those written since the link came up (or since the last
/// [`SendState::reset`]) are *fresh*: they are read first and never windowed, so an alert
/// raised now crosses at once. Those that were already waiting when the link came up are
/// the *backlog*: still read ahead of every normal entry, but within the window shared
/// with the normal lane. Without the split a hub that had stored thousands of emergencies
/// offline would put them all in the network's queue at once, and the alert raised a
/// second later would wait behind them (the receiver imports emergency batches on arrival
/// and orders by HLC, so the split changes no one's view of a room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    Emergency,
    BacklogEmergency,
    Normal,
}

impl Queue {
    /// Every queue, in the order the sender tries them.
    pub const ALL: [Queue; 3] = [Queue::Emergency, Queue::BacklogEmergency, Queue::Normal];

    /// The lane its batches travel in (the receiver treats both emergency queues alike).
    pub fn lane(self) -> Lane {
        match self {
            Queue::Emergency | Queue::BacklogEmergency => Lane::Emergency,
            Queue::Normal => Lane::Normal,
        }
    }

    fn windowed(self) -> bool {
        self != Queue::Emergency
    }
}

#[derive(Debug, Clone)]
pub struct SendState {
    cfg: FlowConfig,
    next_batch: u64,
    inflight: BTreeMap<u64, InFlight>,
    /// Fresh emergencies: read after here.
    pos_emergency: Cursor,
    /// Backlog emergencies: read after here, up to `split`.
    pos_backlog: Cursor,
    /// Emergencies at or below this cursor are the backlog.
    split: Cursor,
    pos_normal: Cursor,
    hwm: Cursor,
    pipe: Pipe,
}

impl SendState {
    /// Starts after `hwm`: everything up to it the peer already has. `head` is the last
    /// cursor written so far: emergencies up to it are the backlog.
    pub fn new(hwm: Cursor, head: Cursor, cfg: FlowConfig) -> Self {
        let split = head.max(hwm);
        Self {
            cfg,
            next_batch: 1,
            inflight: BTreeMap::new(),
            pos_emergency: split,
            pos_backlog: hwm,
            split,
            pos_normal: hwm,
            hwm,
            pipe: Pipe::default(),
        }
    }

    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// What the next read of `queue` covers: entries after the first cursor, and up to
    /// the second if there is one.
    pub fn read_range(&self, queue: Queue) -> (Cursor, Option<Cursor>) {
        match queue {
            Queue::Emergency => (self.pos_emergency, None),
            Queue::BacklogEmergency => (self.pos_backlog, Some(self.split)),
            Queue::Normal => (self.pos_normal, None),
        }
    }

    fn set_pos(&mut self, queue: Queue, to: Cursor) {
        let p = match queue {
            Queue::Emergency => &mut self.pos_emergency,
            Queue::BacklogEmergency => &mut self.pos_backlog,
            Queue::Normal => &mut self.pos_normal,
        };
        *p = (*p).max(to);
        self.pos_backlog = self.pos_backlog.min(self.split);
        self.recompute_hwm();
    }

    /// Records that `queue` has nothing more up to `to`.
    pub fn on_scanned(&mut self, queue: Queue, to: Cursor) {
        self.set_pos(queue, to);
    }

    /// Bytes in flight in batches of `queue`.
    pub fn inflight_bytes(&self, queue: Queue) -> u64 {
        self.inflight.values().filter(|b| b.queue == queue).map(|b| b.bytes).sum()
    }

    pub fn inflight_count(&self, queue: Queue) -> usize {
        self.inflight.values().filter(|b| b.queue == queue).count()
    }

    /// Measured bandwidth-delay product in bytes, if there are samples.
    pub fn bdp(&self) -> Option<u64> {
        self.pipe.bdp()
    }

    /// Bytes of windowed batches (normal and backlog emergencies) allowed in flight.
    pub fn window(&self) -> u64 {
        self.pipe.window(self.cfg.min_window_bytes)
    }

    /// Uncompressed bytes to put in the next normal batch: about one window, so that with
    /// typical 4–7× compression several batches fit in flight (acks keep flowing and the
    /// pipe stays full) yet no batch is larger than `max_batch_bytes` compressed-ish.
    pub fn batch_budget(&self) -> u64 {
        self.window().clamp(self.cfg.min_window_bytes, 4 * self.cfg.max_batch_bytes)
    }

    /// Whether another batch may be read from `queue` and sent now.
    pub fn can_send(&self, queue: Queue) -> bool {
        match queue {
            Queue::Emergency => self.inflight_count(Queue::Emergency) < self.cfg.max_inflight_emergency,
            Queue::BacklogEmergency | Queue::Normal => {
                let (count, bytes) = self
                    .inflight
                    .values()
                    .filter(|b| b.queue.windowed())
                    .fold((0usize, 0u64), |(n, sum), b| (n + 1, sum + b.bytes));
                (queue != Queue::BacklogEmergency || self.pos_backlog < self.split)
                    && count < self.cfg.max_inflight_batches
                    && bytes < self.window()
            }
        }
    }

    /// Registers a sent batch of `queue` covering `first..=last`, whose read examined the
    /// log up to `scanned_to`. Returns its batch id.
    pub fn on_sent(
        &mut self,
        queue: Queue,
        first: Cursor,
        last: Cursor,
        scanned_to: Cursor,
        bytes: u64,
        now: Duration,
    ) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        let delivered_at_send = self.pipe.delivered();
        self.inflight
            .insert(id, InFlight { lane: queue.lane(), queue, first, last, bytes, sent_at: now, delivered_at_send });
        self.set_pos(queue, scanned_to.max(last));
        id
    }

    /// The id the next batch will get (to encode it before registering).
    pub fn peek_batch_id(&self) -> u64 {
        self.next_batch
    }

    /// The receiver committed batch `id`. Returns what it covered (None for an unknown or
    /// repeated ack).
    pub fn on_ack(&mut self, id: u64, now: Duration) -> Option<InFlight> {
        let b = self.inflight.remove(&id)?;
        if b.queue.windowed() {
            // Unwindowed emergencies would skew the pipe's samples: they can be sent in a
            // burst far beyond the window.
            self.pipe.on_ack(b.bytes, b.sent_at, b.delivered_at_send, now);
        }
        self.recompute_hwm();
        Some(b)
    }

    fn recompute_hwm(&mut self) {
        let unacked = self.inflight.values().map(|b| Cursor(b.first.0.saturating_sub(1))).min();
        // An unfinished backlog (pos_backlog < split <= pos_emergency) bounds the mark
        // below the fresh emergencies; a finished one says nothing.
        let backlog = if self.pos_backlog < self.split { self.pos_backlog } else { self.pos_emergency };
        let mut h = backlog.min(self.pos_emergency).min(self.pos_normal);
        if let Some(u) = unacked {
            h = h.min(u);
        }
        self.hwm = self.hwm.max(h);
    }

    /// Starts over from `hwm` (which may be lower than before: the peer needs entries
    /// again). Batches in flight are forgotten; batch ids keep counting up so a late ack
    /// of an old batch is recognised as unknown. Emergencies read so far become backlog.
    pub fn reset(&mut self, hwm: Cursor) {
        self.inflight.clear();
        self.split = self.pos_emergency.max(hwm);
        self.pos_emergency = self.split;
        self.pos_backlog = hwm;
        self.pos_normal = hwm;
        self.hwm = hwm;
    }

    /// Everything up to here was acknowledged by the peer.
    pub fn hwm(&self) -> Cursor {
        self.hwm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn out_of_order_acks_hold_the_mark_at_the_oldest_gap() {
        let mut s = SendState::new(Cursor(10), Cursor(10), FlowConfig::default());
        let a = s.on_sent(Queue::Normal, Cursor(11), Cursor(20), Cursor(20), 100, ms(0));
        let e = s.on_sent(Queue::Emergency, Cursor(25), Cursor(25), Cursor(30), 10, ms(1));
        let b = s.on_sent(Queue::Normal, Cursor(21), Cursor(30), Cursor(30), 100, ms(2));
        assert_eq!(s.hwm(), Cursor(10));
        s.on_ack(e, ms(5));
        s.on_ack(b, ms(6));
        assert_eq!(s.hwm(), Cursor(10), "batch 11..20 is still unacked");
        s.on_ack(a, ms(7));
        assert_eq!(s.hwm(), Cursor(30));
        assert!(s.on_ack(a, ms(8)).is_none(), "a repeated ack changes nothing");
    }

    #[test]
    fn the_emergency_lane_position_bounds_the_mark() {
        let mut s = SendState::new(Cursor(0), Cursor(0), FlowConfig::default());
        let a = s.on_sent(Queue::Normal, Cursor(1), Cursor(50), Cursor(50), 100, ms(0));
        s.on_ack(a, ms(10));
        assert_eq!(s.hwm(), Cursor(0), "the emergency lane has not been read past 0");
        s.on_scanned(Queue::Emergency, Cursor(60));
        assert_eq!(s.hwm(), Cursor(50));
    }

    #[test]
    fn the_window_follows_the_bandwidth_delay_product() {
        let cfg = FlowConfig { max_batch_bytes: 1000, min_window_bytes: 2000, ..FlowConfig::default() };
        let mut s = SendState::new(Cursor(0), Cursor(0), cfg);
        assert_eq!(s.window(), 2000, "the floor before any measurement");
        // A 100 kB/s pipe with 400 ms from send to ack: one 10 kB batch sent every 100 ms,
        // each acked 400 ms later. BDP 40 kB.
        let mut pending = std::collections::VecDeque::new();
        let mut t = 0;
        for i in 0..20u64 {
            while pending.front().is_some_and(|(at, _)| *at <= t) {
                if let Some((at, id)) = pending.pop_front() {
                    s.on_ack(id, ms(at));
                }
            }
            let id =
                s.on_sent(Queue::Normal, Cursor(i * 10 + 1), Cursor(i * 10 + 10), Cursor(i * 10 + 10), 10_000, ms(t));
            pending.push_back((t + 400, id));
            t += 100;
        }
        for (at, id) in pending {
            s.on_ack(id, ms(at));
        }
        let w = s.window();
        assert!((40_000..=60_000).contains(&w), "window {w}");
        assert!(s.can_send(Queue::Normal));
        let mut n = 0;
        while s.can_send(Queue::Normal) {
            s.on_sent(Queue::Normal, Cursor(1000 + n), Cursor(1000 + n), Cursor(1000 + n), 10_000, ms(t));
            n += 1;
        }
        assert_eq!(n, w.div_ceil(10_000), "sending stops once the window is full");
        assert!(s.can_send(Queue::Emergency), "emergencies are not windowed");
    }

    #[test]
    fn fresh_emergencies_skip_the_backlog_and_the_backlog_shares_the_window() {
        let cfg = FlowConfig { min_window_bytes: 2000, ..FlowConfig::default() };
        // The peer has everything up to 100; the hub had written up to 5,000 when the
        // link came up.
        let mut s = SendState::new(Cursor(100), Cursor(5000), cfg);
        assert_eq!(s.read_range(Queue::Emergency), (Cursor(5000), None), "fresh ones start after the head");
        assert_eq!(s.read_range(Queue::BacklogEmergency), (Cursor(100), Some(Cursor(5000))));
        // Old emergencies fill the window; a normal batch cannot pass them, a fresh
        // emergency can.
        let old = s.on_sent(Queue::BacklogEmergency, Cursor(101), Cursor(900), Cursor(900), 2500, ms(0));
        assert!(!s.can_send(Queue::BacklogEmergency) && !s.can_send(Queue::Normal));
        assert!(s.can_send(Queue::Emergency));
        let fresh = s.on_sent(Queue::Emergency, Cursor(5001), Cursor(5001), Cursor(5001), 100, ms(1));
        s.on_ack(fresh, ms(300));
        assert_eq!(s.hwm(), Cursor(100), "the backlog and the normal lane hold the mark");
        s.on_ack(old, ms(400));
        assert!(s.can_send(Queue::BacklogEmergency));
        // The backlog reaches the split: it is done and no longer bounds the mark.
        s.on_scanned(Queue::BacklogEmergency, Cursor(5000));
        assert!(!s.can_send(Queue::BacklogEmergency), "nothing left below the split");
        assert_eq!(s.read_range(Queue::BacklogEmergency).0, Cursor(5000));
        s.on_scanned(Queue::Normal, Cursor(5001));
        assert_eq!(s.hwm(), Cursor(5001));
    }

    #[test]
    fn a_reset_turns_what_was_read_into_backlog() {
        let mut s = SendState::new(Cursor(0), Cursor(0), FlowConfig::default());
        s.on_sent(Queue::Emergency, Cursor(7), Cursor(7), Cursor(40), 100, ms(0));
        s.on_scanned(Queue::Normal, Cursor(40));
        s.reset(Cursor(0));
        assert_eq!(s.hwm(), Cursor(0));
        assert_eq!(s.read_range(Queue::BacklogEmergency), (Cursor(0), Some(Cursor(40))), "cursor 7 is sent again");
        assert_eq!(s.read_range(Queue::Emergency), (Cursor(40), None));
        assert!(s.can_send(Queue::BacklogEmergency));
    }
}
