//! A session's mailbox: what is waiting to be written to one device, in three queues.
//!
//! - `urgent`: live emergencies (from the router);
//! - `direct`: answers to this device's own sends (`stored`/`error`, from the store's
//!   writer), bounded by reservations taken before a send is read;
//! - `normal`: every other live entry and ephemeral event (from the router).
//!
//! Two hub-wide signals come through it too, ahead of everything else: *close* (the hub
//! is shutting down) and *recheck* (a new revocation list was loaded). The router raises
//! them on every session, so a session waits on one thing, its mailbox, instead of
//! holding its own cancellation and watch futures.
//!
//! One mutex, one stored waker, and no allocation until something is queued: an idle
//! phone costs a couple of hundred bytes here, where three tokio channels cost about
//! 3.6 KiB (each allocates its first 32-slot block up front). With a thousand idle phones
//! on a Pi that difference is what BENCHMARKS.md's memory figure measures. A queue that
//! grew during a burst gives its memory back once drained.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use axum::extract::ws::Utf8Bytes;
use outpost_shared::Cursor;

/// An item on a session's lane.
#[derive(Debug, Clone)]
pub enum Live {
    /// A committed log entry (message or receipt), encoded once and shared.
    Log { cursor: Cursor, text: Utf8Bytes },
    /// Typing and presence: never stored.
    Ephemeral(Utf8Bytes),
}

/// What the session takes next, most urgent first.
#[derive(Debug)]
pub enum Item {
    /// The hub is shutting down: close the connection (stays raised once raised).
    Close,
    /// The revocation list changed: check this session's token against it.
    Recheck,
    Urgent(Live),
    Direct(Utf8Bytes),
    Normal(Live),
}

/// Which live queue an entry goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Urgent,
    Normal,
}

#[derive(Debug, Default)]
struct Queues {
    urgent: VecDeque<Live>,
    normal: VecDeque<Live>,
    direct: VecDeque<Utf8Bytes>,
    /// Direct answers reserved and not yet delivered into `direct`.
    reserved: usize,
    closing: bool,
    recheck: bool,
    /// The session's task, woken when something arrives (one waiter: the session).
    waker: Option<Waker>,
}

/// Queues above this capacity are shrunk when they drain (bursts do not pin memory).
const KEEP_CAPACITY: usize = 16;

#[derive(Debug)]
pub struct Mailbox {
    queues: Mutex<Queues>,
    lane_capacity: usize,
    direct_capacity: usize,
}

impl Mailbox {
    pub fn new(lane_capacity: usize, direct_capacity: usize) -> Arc<Self> {
        Arc::new(Self { queues: Mutex::default(), lane_capacity, direct_capacity })
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        // A panic while holding the lock cannot leave the queues inconsistent (every
        // operation is a single push or pop), so a poisoned lock is still usable.
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the session after something was queued (outside the lock).
    fn wake(mut q: MutexGuard<'_, Queues>) {
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Raises *close*: the session ends its connection with 1001 (hub shutting down).
    pub fn close(&self) {
        let mut q = self.lock();
        q.closing = true;
        Self::wake(q);
    }

    /// Raises *recheck*: the session checks its token against the revocation list.
    pub fn recheck(&self) {
        let mut q = self.lock();
        q.recheck = true;
        Self::wake(q);
    }

    /// Queues a live entry; false when that lane is full (the entry is not queued).
    pub fn offer(&self, lane: Lane, live: Live) -> bool {
        let mut q = self.lock();
        let queue = match lane {
            Lane::Urgent => &mut q.urgent,
            Lane::Normal => &mut q.normal,
        };
        if queue.len() >= self.lane_capacity {
            return false;
        }
        queue.push_back(live);
        Self::wake(q);
        true
    }

    /// Reserves room for one direct answer; None when `direct_capacity` answers are
    /// already reserved or waiting (the session then stops reading its socket).
    pub fn try_reserve(self: &Arc<Self>) -> Option<Permit> {
        let mut q = self.lock();
        if q.reserved + q.direct.len() >= self.direct_capacity {
            return None;
        }
        q.reserved += 1;
        Some(Permit { mailbox: Some(self.clone()) })
    }

    /// Whether another direct answer can be reserved now.
    pub fn has_direct_room(&self) -> bool {
        let q = self.lock();
        q.reserved + q.direct.len() < self.direct_capacity
    }

    /// Takes the most urgent waiting item, if any; with `urgent_only` the other queues are
    /// left alone (a replaying session writes emergencies ahead of the log, nothing else).
    /// Signals come first and are never held back.
    pub fn try_next(&self, urgent_only: bool) -> Option<Item> {
        Self::take(&mut self.lock(), urgent_only)
    }

    fn take(q: &mut Queues, urgent_only: bool) -> Option<Item> {
        let item = if q.closing {
            Item::Close
        } else if std::mem::take(&mut q.recheck) {
            Item::Recheck
        } else if let Some(l) = q.urgent.pop_front() {
            Item::Urgent(l)
        } else if urgent_only {
            return None;
        } else if let Some(t) = q.direct.pop_front() {
            Item::Direct(t)
        } else {
            Item::Normal(q.normal.pop_front()?)
        };
        if q.normal.is_empty() && q.normal.capacity() > KEEP_CAPACITY {
            q.normal = VecDeque::new();
        }
        if q.direct.is_empty() && q.direct.capacity() > KEEP_CAPACITY {
            q.direct = VecDeque::new();
        }
        Some(item)
    }

    /// The most urgent item (see [`Mailbox::try_next`] for `urgent_only`), or Pending
    /// with the task's waker kept until something arrives. An item is taken only when
    /// returned, so a session may poll this among its other sources and drop out freely.
    pub fn poll_next(&self, cx: &mut Context<'_>, urgent_only: bool) -> Poll<Item> {
        let mut q = self.lock();
        if let Some(item) = Self::take(&mut q, urgent_only) {
            return Poll::Ready(item);
        }
        if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            q.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits for the most urgent item; see [`Mailbox::poll_next`]. (Sessions poll
    /// directly; the tests wait with this.)
    #[cfg(test)]
    pub async fn next(&self, urgent_only: bool) -> Item {
        std::future::poll_fn(|cx| self.poll_next(cx, urgent_only)).await
    }

    /// Whether nothing is waiting in any queue.
    pub fn is_empty(&self) -> bool {
        let q = self.lock();
        q.urgent.is_empty() && q.direct.is_empty() && q.normal.is_empty()
    }

    /// Whether ordinary live entries are waiting (an emergency then overtakes them).
    pub fn normal_waiting(&self) -> bool {
        !self.lock().normal.is_empty()
    }
}

/// Room for one direct answer; `send` queues it, dropping it gives the room back.
#[derive(Debug)]
pub struct Permit {
    mailbox: Option<Arc<Mailbox>>,
}

impl Permit {
    pub fn send(mut self, text: Utf8Bytes) {
        if let Some(m) = self.mailbox.take() {
            let mut q = m.lock();
            q.reserved -= 1;
            q.direct.push_back(text);
            Mailbox::wake(q);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(m) = self.mailbox.take() {
            m.lock().reserved -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(c: u64) -> Live {
        Live::Log { cursor: outpost_shared::Cursor(c), text: Utf8Bytes::from(format!("{c}")) }
    }

    fn cursor(i: Option<Item>) -> Option<(char, u64)> {
        match i? {
            Item::Urgent(Live::Log { cursor, .. }) => Some(('u', cursor.0)),
            Item::Normal(Live::Log { cursor, .. }) => Some(('n', cursor.0)),
            Item::Direct(t) => Some(('d', t.as_str().parse().unwrap_or(0))),
            _ => None,
        }
    }

    #[test]
    fn urgent_then_direct_then_normal_each_in_order() {
        let m = Mailbox::new(4, 2);
        assert!(m.offer(Lane::Normal, log(1)));
        assert!(m.offer(Lane::Normal, log(2)));
        let p = m.try_reserve().unwrap_or_else(|| panic!("room"));
        p.send(Utf8Bytes::from("9"));
        assert!(m.offer(Lane::Urgent, log(3)));
        let held: Vec<_> = std::iter::from_fn(|| cursor(m.try_next(true))).collect();
        assert_eq!(held, [('u', 3)], "urgent only: answers and the normal lane wait");
        assert!(m.normal_waiting() && !m.is_empty());
        let order: Vec<_> = std::iter::from_fn(|| cursor(m.try_next(false))).collect();
        assert_eq!(order, [('d', 9), ('n', 1), ('n', 2)]);
        assert!(m.is_empty());
    }

    #[test]
    fn lanes_and_reservations_are_bounded() {
        let m = Mailbox::new(2, 2);
        assert!(m.offer(Lane::Normal, log(1)) && m.offer(Lane::Normal, log(2)));
        assert!(!m.offer(Lane::Normal, log(3)), "a full lane refuses");
        assert!(m.offer(Lane::Urgent, log(4)), "lanes are bounded separately");
        let a = m.try_reserve();
        let b = m.try_reserve();
        assert!(a.is_some() && b.is_some() && m.try_reserve().is_none() && !m.has_direct_room());
        drop(a);
        assert!(m.has_direct_room(), "a dropped permit gives its room back");
        if let Some(b) = b {
            b.send(Utf8Bytes::from("7"));
        }
        assert!(m.try_reserve().is_some(), "one waiting answer, one free slot");
    }

    #[test]
    fn signals_go_ahead_of_everything_even_during_a_replay() {
        let m = Mailbox::new(4, 4);
        assert!(m.offer(Lane::Urgent, log(1)));
        m.recheck();
        m.recheck();
        assert!(matches!(m.try_next(true), Some(Item::Recheck)), "a recheck goes before an emergency");
        assert_eq!(cursor(m.try_next(true)), Some(('u', 1)), "raised twice, checked once");
        m.close();
        assert!(matches!(m.try_next(true), Some(Item::Close)));
        assert!(matches!(m.try_next(false), Some(Item::Close)), "close stays raised");
    }

    #[tokio::test]
    async fn a_signal_wakes_a_waiting_session() {
        let m = Mailbox::new(4, 4);
        let m2 = m.clone();
        let waiter = tokio::spawn(async move { matches!(m2.next(true).await, Item::Close) });
        tokio::task::yield_now().await;
        m.close();
        assert!(waiter.await.unwrap_or(false));
    }

    #[tokio::test]
    async fn next_wakes_on_an_offer_from_another_task() {
        let m = Mailbox::new(4, 4);
        let m2 = m.clone();
        let waiter = tokio::spawn(async move { cursor(Some(m2.next(false).await)) });
        tokio::task::yield_now().await;
        m.offer(Lane::Normal, log(5));
        assert_eq!(waiter.await.ok().flatten(), Some(('n', 5)));
    }
}
