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
//! product (2 × while the link is being filled; delivery rate from receptions,
//! max-filtered; RTT min-filtered), with a small floor, so the link never holds a standing
//! queue of our own making that a new emergency would have to wait behind; batches are
//! sized from the window so several are in flight.
//!
//! The window counts the bytes still *in the network*: a batch leaves it when the peer's
//! QUIC stack has acknowledged all of its stream ([`SendState::on_received`]), which is
//! usually well before the peer's durable `Ack`. The receiver imports normal batches in
//! order, so one lost packet holds the durable acks of every later batch for a
//! retransmission's round trip; counting those batches against the window would leave
//! the link idle for that time (a 3G drain reached 0.70–0.82 of a bare QUIC transfer so).
//! Durability, the high-water mark and the cap on batches in flight still follow the
//! durable acks only.
//!
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
    /// Messages per room sent newest first to a peer being rebuilt, before the ordinary
    /// oldest-first pass (`limits.rebuild_recent_per_room`); 0: none.
    pub rebuild_recent_per_room: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            max_batch_bytes: 32 * 1024,
            max_inflight_batches: 32,
            max_inflight_emergency: 64,
            linger: Duration::from_millis(500),
            min_window_bytes: 16 * 1024,
            rebuild_recent_per_room: 200,
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
    /// The peer's transport has all of it (it is out of the network), durable or not.
    received: bool,
}

/// Rate samples kept for the max filter.
const RATE_SAMPLES: usize = 16;

/// Window gain while the link is being filled: twice the product, so the window can grow
/// although every round trip measured includes the batches' own transmission time.
const STARTUP_GAIN: f64 = 2.0;
/// Window gain once the link is full: enough headroom for the rate to keep being probed,
/// little enough that no standing queue builds.
const STEADY_GAIN: f64 = 1.25;
/// The link counts as full once the delivery rate has not grown by a quarter in this many
/// round trips in a row (BBR's "full bandwidth" rule).
const FULL_AFTER_ROUNDS: u8 = 3;

/// What the link delivers: a delivery-rate estimate (BBR-style samples: bytes delivered
/// between a send and its acknowledgement over the time between them, max-filtered) and
/// the smallest round trip seen. Their product is the bandwidth-delay product, the most
/// that can be in flight without a queue building in the network. The normal lane and
/// the media bulk lane each keep one.
///
/// The window starts at twice the product and settles at 1.25 × once the rate stops
/// growing. With 1.25 × from the start a drain opened at the floor and stayed near it for
/// its first ten seconds over 3G: a round trip of a window of small batches takes longer
/// than 1.25 × the smallest one measured, so each round's samples only confirmed the
/// window they were taken under.
#[derive(Debug, Clone, Default)]
pub struct Pipe {
    delivered: u64,
    rates: VecDeque<f64>,
    min_rtt: Option<Duration>,
    /// `delivered` when the current round trip ends (a sample sent after it was reached
    /// starts the next).
    round_end: u64,
    /// Best rate at the start of the rounds without growth, and how many there were.
    full_rate: f64,
    rounds_without_growth: u8,
    full: bool,
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
        if !self.full && delivered_at_send >= self.round_end {
            self.round_end = self.delivered;
            let best = self.max_rate().unwrap_or(0.0);
            if best >= self.full_rate * 1.25 {
                (self.full_rate, self.rounds_without_growth) = (best, 0);
            } else {
                self.rounds_without_growth += 1;
                self.full = self.rounds_without_growth >= FULL_AFTER_ROUNDS;
            }
        }
    }

    fn max_rate(&self) -> Option<f64> {
        self.rates.iter().copied().fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
    }

    /// Whether the delivery rate has stopped growing (the window then keeps 1.25 × the
    /// product instead of 2 ×).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Measured bandwidth-delay product in bytes, if there are samples.
    pub fn bdp(&self) -> Option<u64> {
        let rate = self.max_rate()?;
        let rtt = self.min_rtt?;
        Some((rate * rtt.as_secs_f64()) as u64)
    }

    /// Bytes allowed in flight: 2 × the bandwidth-delay product while the link is being
    /// filled, 1.25 × after (the headroom lets the max-filtered rate keep growing),
    /// never below `floor`.
    pub fn window(&self, floor: u64) -> u64 {
        let gain = if self.full { STEADY_GAIN } else { STARTUP_GAIN };
        self.bdp().map_or(floor, |bdp| ((bdp as f64 * gain) as u64).max(floor))
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
                // Every unacknowledged batch counts against the cap, only those still in
                // the network against the window.
                let (count, bytes) = self
                    .inflight
                    .values()
                    .filter(|b| b.queue.windowed())
                    .fold((0usize, 0u64), |(n, sum), b| (n + 1, sum + if b.received { 0 } else { b.bytes }));
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
        self.inflight.insert(
            id,
            InFlight {
                lane: queue.lane(),
                queue,
                first,
                last,
                bytes,
                sent_at: now,
                delivered_at_send,
                received: false,
            },
        );
        self.set_pos(queue, scanned_to.max(last));
        id
    }

    /// The id the next batch will get (to encode it before registering).
    pub fn peek_batch_id(&self) -> u64 {
        self.next_batch
    }

    /// The peer's transport acknowledged all of batch `id`'s stream: its bytes are out of
    /// the network, though not yet durable there. Frees its share of the window and is
    /// the pipe's sample for it (a round trip without the receiver's import and commit).
    /// Unknown or repeated ids change nothing.
    pub fn on_received(&mut self, id: u64, now: Duration) {
        if let Some(b) = self.inflight.get_mut(&id)
            && !b.received
        {
            b.received = true;
            if b.queue.windowed() {
                // Unwindowed emergencies would skew the pipe's samples: they can be
                // sent in a burst far beyond the window.
                self.pipe.on_ack(b.bytes, b.sent_at, b.delivered_at_send, now);
            }
        }
    }

    /// The receiver committed batch `id`. Returns what it covered (None for an unknown or
    /// repeated ack). A batch acked before its reception was reported was received too.
    pub fn on_ack(&mut self, id: u64, now: Duration) -> Option<InFlight> {
        self.on_received(id, now);
        let b = self.inflight.remove(&id)?;
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

    /// A drain of `total` bytes over a modelled lossy link. Bytes leave one after another
    /// at `rate` B/s in packets of 1,200; a packet is lost with probability `loss`, and its
    /// batch then completes one loss-detection delay (9/8 of a round trip) later. The
    /// peer's transport acknowledges a complete batch half a round trip after it arrived
    /// (QUIC acknowledgements are cumulative, so a lost one costs nothing); the peer
    /// imports batches in order, 20 ms each, and its durable acks travel in order on the
    /// control stream, where a lost packet holds every later ack for a loss-detection
    /// delay too. The sender fills its window with batches of a fifth of the budget (the
    /// corpus' usual compression). Returns the time the link alone would need ÷ the
    /// drain's time (the last byte's arrival), and the longest a byte waited in front of
    /// the link: what a fresh emergency waits behind.
    fn drain_modelled_link(total: u64, rate: f64, rtt: Duration, loss: f64) -> (f64, Duration) {
        let (half, commit) = (rtt / 2, ms(20));
        let mut s = SendState::new(Cursor(0), Cursor(0), FlowConfig::default());
        let mut now = Duration::ZERO;
        let (mut link_free, mut imported, mut acked) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        // Events by time: (is a durable ack, batch id).
        let mut events: BTreeMap<(Duration, u64), (bool, u64)> = BTreeMap::new();
        let (mut left, mut done, mut longest_queue) = (total, Duration::ZERO, Duration::ZERO);
        let (mut seq, mut rng) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
        loop {
            while left > 0 && s.can_send(Queue::Normal) {
                let bytes = (s.batch_budget() / 5).min(left);
                left -= bytes;
                seq += 1;
                let c = Cursor(seq);
                let id = s.on_sent(Queue::Normal, c, c, c, bytes, now);
                let start = link_free.max(now);
                longest_queue = longest_queue.max(start - now);
                link_free = start + Duration::from_secs_f64(bytes as f64 / rate);
                let mut lose = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if (rng >> 11) as f64 / (1u64 << 53) as f64 <= loss { rtt * 9 / 8 } else { Duration::ZERO }
                };
                let arrived = link_free + half + (0..bytes.div_ceil(1200)).map(|_| lose()).max().unwrap_or_default();
                done = done.max(arrived);
                imported = imported.max(arrived) + commit;
                acked = acked.max(imported + half + lose());
                events.insert((arrived + half, 2 * seq), (false, id));
                events.insert((acked, 2 * seq + 1), (true, id));
            }
            let Some(((at, _), (durable, id))) = events.pop_first() else { break };
            now = at;
            if durable {
                s.on_ack(id, now);
            } else {
                s.on_received(id, now);
            }
        }
        (total as f64 / rate / done.as_secs_f64(), longest_queue)
    }

    #[test]
    fn a_drain_keeps_a_lossy_link_busy_without_a_standing_queue() {
        // 2.3 MB is what 100,000 messages cost in batches; the links are the emulator's.
        for (name, rate, rtt, loss) in [("3G", 96_000.0, ms(300), 0.005), ("EDGE", 25_000.0, ms(840), 0.01)] {
            let (ratio, queue) = drain_modelled_link(2_300_000, rate, rtt, loss);
            assert!(ratio >= 0.9, "{name}: the drain ran at {ratio:.2} of the link");
            assert!(queue <= rtt * 5 / 2, "{name}: bytes queued {queue:?} in front of the link");
        }
    }

    #[test]
    fn the_window_opens_at_twice_the_product_and_settles_once_the_rate_stops_growing() {
        // One 10 kB batch per 100 ms, each acked 400 ms later: 100 kB/s, BDP 40 kB, a
        // round trip every four batches.
        let mut p = Pipe::default();
        let (mut t, mut windows) = (0u64, Vec::new());
        let mut pending = std::collections::VecDeque::new();
        while t < 4000 {
            while pending.front().is_some_and(|(at, _, _)| *at <= t) {
                if let Some((at, sent, delivered)) = pending.pop_front() {
                    p.on_ack(10_000, ms(sent), delivered, ms(at));
                }
            }
            windows.push((t, p.window(1000), p.is_full()));
            pending.push_back((t + 400, t, p.delivered()));
            t += 100;
        }
        let at = |ms: u64| windows.iter().find(|w| w.0 == ms).copied().unwrap_or_default();
        assert!(!at(800).2 && (70_000..=90_000).contains(&at(800).1), "filling: {:?}", at(800));
        let (when, _, _) = windows.iter().find(|w| w.2).copied().unwrap_or_default();
        assert!((1000..=3000).contains(&when), "full after three round trips without growth, at {when} ms");
        assert!((45_000..=55_000).contains(&at(3900).1), "then 1.25 × the product: {:?}", at(3900));
    }

    #[test]
    fn a_batch_out_of_the_network_frees_the_window_before_it_is_durable() {
        let cfg = FlowConfig { min_window_bytes: 2000, ..FlowConfig::default() };
        let mut s = SendState::new(Cursor(0), Cursor(0), cfg);
        let a = s.on_sent(Queue::Normal, Cursor(1), Cursor(10), Cursor(10), 1500, ms(0));
        let b = s.on_sent(Queue::Normal, Cursor(11), Cursor(20), Cursor(20), 1500, ms(1));
        assert!(!s.can_send(Queue::Normal), "3,000 bytes in the network fill a 2,000-byte window");
        // Batch b arrived whole; a is still missing a packet, so neither is durable.
        s.on_received(b, ms(300));
        assert!(s.can_send(Queue::Normal), "b's bytes left the network");
        assert_eq!(s.hwm(), Cursor(0), "nothing is durable yet");
        s.on_received(b, ms(310));
        s.on_ack(a, ms(700));
        s.on_ack(b, ms(710));
        s.on_scanned(Queue::Emergency, Cursor(20));
        assert_eq!(s.hwm(), Cursor(20));
        assert_eq!(s.inflight_count(Queue::Normal), 0);
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
