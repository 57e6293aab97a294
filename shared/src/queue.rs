//! Doctors' queues, derived from messages (docs/workflows.md, "Appointments and doctors'
//! queues").
//!
//! A booking is a `queue.book` message addressed to a doctor's queue (the doctor's user
//! id); every change is a `queue.update` naming the booking. There is no queue table to
//! keep in step: [`derive`] folds a room's queue messages into the queues every time one
//! is read, so a restart, a rebuilt cloud or an imported log shows the same queue. The
//! fold sorts its input by stamp (`hlc`, then id), the order every server shares, so a
//! hub and its cloud derive the same queue whatever order the messages reached them in.
//!
//! The bodies were checked at `send` ([`crate::clinical::validate`]); a body that no
//! longer parses (a schema written by a newer server) is skipped, never fatal.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ids::MessageId;

/// The kind of a booking.
pub const BOOK: &str = "queue.book";
/// The kind of a change to a booking.
pub const UPDATE: &str = "queue.update";
/// Urgencies, most urgent first: the queue's first ordering key.
pub const URGENCIES: [&str; 3] = ["urgent", "soon", "routine"];
/// What an update may set a booking's status to.
pub const STATUSES: [&str; 4] = ["confirmed", "rescheduled", "cancelled", "completed"];
/// Finished entries [`derive`] keeps, newest first.
pub const FINISHED_SHOWN: usize = 20;

/// One queue message as the fold needs it.
#[derive(Debug, Clone)]
pub struct QueueEvent<'a> {
    pub id: MessageId,
    /// The stamp (`msg.hlc`): the order of the fold.
    pub hlc: u64,
    /// The sender's user id.
    pub from: &'a str,
    pub kind: &'a str,
    /// The body as JSON text.
    pub body: &'a str,
}

/// A booking and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub booking: MessageId,
    pub queue: String,
    pub patient: String,
    pub reason: String,
    pub urgency: String,
    /// `booked`, `confirmed`, `rescheduled`, `cancelled` or `completed`.
    pub status: String,
    /// Place in the queue from 1; `None` once finished.
    pub position: Option<u32>,
    pub booked_by: String,
    /// The booking's stamp time, ms since 1970.
    pub booked_at: u64,
    /// Set by a reschedule.
    pub due_at: Option<u64>,
    pub updated_by: Option<String>,
    pub updated_at: Option<u64>,
    #[serde(skip)]
    hlc: u64,
    #[serde(skip)]
    finished_hlc: u64,
}

impl Entry {
    /// Completed or cancelled: no later update changes it.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "cancelled")
    }

    /// The open queue's order: urgency, then when it is due, then stamp (unique with id).
    fn order_key(&self) -> (usize, u64, u64, MessageId) {
        let urgency = URGENCIES.iter().position(|u| *u == self.urgency).unwrap_or(URGENCIES.len());
        (urgency, self.due_at.unwrap_or(self.booked_at), self.hlc, self.booking)
    }
}

/// One doctor's open entries, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub queue: String,
    pub entries: Vec<Entry>,
}

/// Every queue of a room, and the entries finished most recently.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Queues {
    /// By queue name.
    pub queues: Vec<Queue>,
    /// Newest first, at most [`FINISHED_SHOWN`].
    pub finished: Vec<Entry>,
}

#[derive(Deserialize)]
struct Book {
    queue: String,
    patient: String,
    reason: String,
    urgency: String,
}

#[derive(Deserialize)]
struct Update {
    queue: String,
    booking: MessageId,
    status: Option<String>,
    urgency: Option<String>,
    due_at: Option<u64>,
}

/// The queue an update of `kind` with `body` needs its sender to own, if it does: every
/// change but a cancel is the doctor's alone. A server refuses the others at `send`; a
/// cancel can only be judged against the booking, by [`derive`].
pub fn owner_required(kind: &str, body: &str) -> Option<String> {
    if kind != UPDATE {
        return None;
    }
    let u: Update = serde_json::from_str(body).ok()?;
    let only_cancel = u.status.as_deref() == Some("cancelled") && u.urgency.is_none();
    (!only_cancel).then_some(u.queue)
}

/// Folds a room's queue messages (any order; other kinds are skipped) into its queues.
pub fn derive(events: &[QueueEvent<'_>]) -> Queues {
    let mut sorted: Vec<&QueueEvent<'_>> = events.iter().collect();
    sorted.sort_by_key(|e| (e.hlc, e.id));
    let mut entries: HashMap<MessageId, Entry> = HashMap::new();
    for e in sorted {
        match e.kind {
            BOOK => {
                let Ok(b) = serde_json::from_str::<Book>(e.body) else { continue };
                entries.entry(e.id).or_insert(Entry {
                    booking: e.id,
                    queue: b.queue,
                    patient: b.patient,
                    reason: b.reason,
                    urgency: b.urgency,
                    status: "booked".into(),
                    position: None,
                    booked_by: e.from.to_owned(),
                    booked_at: crate::Hlc(e.hlc).physical_ms(),
                    due_at: None,
                    updated_by: None,
                    updated_at: None,
                    hlc: e.hlc,
                    finished_hlc: 0,
                });
            }
            UPDATE => {
                let Ok(u) = serde_json::from_str::<Update>(e.body) else { continue };
                let Some(entry) = entries.get_mut(&u.booking) else { continue };
                apply(entry, &u, e);
            }
            _ => {}
        }
    }
    let mut open: HashMap<String, Vec<Entry>> = HashMap::new();
    let mut finished = Vec::new();
    for entry in entries.into_values() {
        if entry.is_finished() {
            finished.push(entry);
        } else {
            open.entry(entry.queue.clone()).or_default().push(entry);
        }
    }
    let mut queues: Vec<Queue> = open
        .into_iter()
        .map(|(queue, mut entries)| {
            entries.sort_by_key(Entry::order_key);
            for (i, e) in entries.iter_mut().enumerate() {
                e.position = Some(u32::try_from(i + 1).unwrap_or(u32::MAX));
            }
            Queue { queue, entries }
        })
        .collect();
    queues.sort_by(|a, b| a.queue.cmp(&b.queue));
    finished.sort_by_key(|e| std::cmp::Reverse((e.finished_hlc, e.booking)));
    finished.truncate(FINISHED_SHOWN);
    Queues { queues, finished }
}

/// One update, if its sender may make it: the queue's doctor anything, the booker a
/// cancel. Updates of a finished booking, or naming another queue, change nothing.
fn apply(entry: &mut Entry, u: &Update, e: &QueueEvent<'_>) {
    if entry.is_finished() || u.queue != entry.queue {
        return;
    }
    let owner = e.from == entry.queue;
    let cancel_only = u.status.as_deref() == Some("cancelled") && u.urgency.is_none();
    if !(owner || cancel_only && e.from == entry.booked_by) {
        return;
    }
    match (u.status.as_deref(), u.due_at) {
        (Some("rescheduled"), Some(due)) => {
            entry.status = "rescheduled".into();
            entry.due_at = Some(due);
        }
        (Some(s @ ("confirmed" | "cancelled" | "completed")), _) => entry.status = s.to_owned(),
        (None, _) => {}
        // A reschedule without a time, or a status this build does not know.
        _ => return,
    }
    if let Some(urgency) = u.urgency.as_deref().filter(|x| URGENCIES.contains(x)) {
        entry.urgency = urgency.to_owned();
    }
    if entry.is_finished() {
        entry.finished_hlc = e.hlc;
    }
    entry.updated_by = Some(e.from.to_owned());
    entry.updated_at = Some(crate::Hlc(e.hlc).physical_ms());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const T0: u64 = 1_780_000_000_000;

    /// `base` with the fields of `more` added.
    fn merged(mut base: serde_json::Value, more: serde_json::Value) -> serde_json::Value {
        if let (Some(b), serde_json::Value::Object(m)) = (base.as_object_mut(), more) {
            b.extend(m);
        }
        base
    }

    struct Log(Vec<(MessageId, u64, String, &'static str, String)>);

    impl Log {
        fn new() -> Self {
            Self(Vec::new())
        }
        fn stamp(&self) -> u64 {
            crate::Hlc::new(T0 + self.0.len() as u64 * 1000, 0).0
        }
        fn book(&mut self, from: &str, queue: &str, patient: &str, urgency: &str) -> MessageId {
            let id = MessageId(uuid::Uuid::now_v7());
            let body = json!({"queue": queue, "patient": patient, "reason": "r", "urgency": urgency});
            self.0.push((id, self.stamp(), from.into(), BOOK, body.to_string()));
            id
        }
        fn update(&mut self, from: &str, queue: &str, booking: MessageId, fields: serde_json::Value) {
            let body = merged(json!({"queue": queue, "booking": booking}), fields);
            self.0.push((MessageId(uuid::Uuid::now_v7()), self.stamp(), from.into(), UPDATE, body.to_string()));
        }
        fn events(&self) -> Vec<QueueEvent<'_>> {
            self.0
                .iter()
                .map(|(id, hlc, from, kind, body)| QueueEvent { id: *id, hlc: *hlc, from, kind, body })
                .collect()
        }
        fn derive(&self) -> Queues {
            derive(&self.events())
        }
    }

    fn patients(q: &Queues, queue: &str) -> Vec<(String, u32)> {
        q.queues
            .iter()
            .find(|x| x.queue == queue)
            .map(|x| x.entries.iter().map(|e| (e.patient.clone(), e.position.unwrap_or(0))).collect())
            .unwrap_or_default()
    }

    #[test]
    fn completing_the_first_moves_the_others_up() {
        let mut log = Log::new();
        let a = log.book("amina", "dr-neema", "P1", "routine");
        log.book("amina", "dr-neema", "P2", "routine");
        log.book("baraka", "dr-neema", "P3", "routine");
        assert_eq!(patients(&log.derive(), "dr-neema"), [("P1".into(), 1), ("P2".into(), 2), ("P3".into(), 3)]);
        log.update("dr-neema", "dr-neema", a, json!({"status": "completed"}));
        let q = log.derive();
        assert_eq!(patients(&q, "dr-neema"), [("P2".into(), 1), ("P3".into(), 2)]);
        assert_eq!(q.finished.len(), 1);
        assert_eq!(q.finished[0].status, "completed");
        assert_eq!(q.finished[0].updated_by.as_deref(), Some("dr-neema"));
    }

    #[test]
    fn urgency_goes_first_and_a_reschedule_orders_by_its_time() {
        let mut log = Log::new();
        let p1 = log.book("amina", "dr-neema", "P1", "routine");
        log.book("amina", "dr-neema", "P2", "routine");
        log.book("baraka", "dr-neema", "P3", "urgent");
        log.book("baraka", "dr-neema", "P4", "soon");
        assert_eq!(
            patients(&log.derive(), "dr-neema").iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["P3", "P4", "P1", "P2"]
        );
        // P1 moved to tomorrow: behind P2, booked after it.
        log.update("dr-neema", "dr-neema", p1, json!({"status": "rescheduled", "due_at": T0 + 86_400_000}));
        assert_eq!(
            patients(&log.derive(), "dr-neema").iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["P3", "P4", "P2", "P1"]
        );
        // The doctor triages P1 as urgent: it goes to the urgent group, behind P3 (due earlier).
        log.update("dr-neema", "dr-neema", p1, json!({"urgency": "urgent"}));
        let q = log.derive();
        assert_eq!(patients(&q, "dr-neema").iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["P3", "P1", "P4", "P2"]);
        let p1 = &q.queues[0].entries[1];
        assert_eq!((p1.status.as_str(), p1.urgency.as_str()), ("rescheduled", "urgent"));
    }

    #[test]
    fn only_the_doctor_changes_entries_and_only_the_booker_or_doctor_cancels() {
        let mut log = Log::new();
        let p1 = log.book("amina", "dr-neema", "P1", "routine");
        let p2 = log.book("amina", "dr-neema", "P2", "routine");
        let p3 = log.book("amina", "dr-neema", "P3", "routine");
        // Not the doctor: ignored (a server refuses these at send; an old log may hold them).
        log.update("baraka", "dr-neema", p1, json!({"status": "completed"}));
        log.update("dr-juma", "dr-neema", p1, json!({"status": "confirmed"}));
        // A cancel by neither booker nor doctor: ignored.
        log.update("baraka", "dr-neema", p2, json!({"status": "cancelled"}));
        assert_eq!(patients(&log.derive(), "dr-neema").len(), 3);
        assert!(log.derive().queues[0].entries.iter().all(|e| e.status == "booked"));
        // The booker cancels; the doctor cancels another.
        log.update("amina", "dr-neema", p2, json!({"status": "cancelled"}));
        log.update("dr-neema", "dr-neema", p3, json!({"status": "cancelled"}));
        let q = log.derive();
        assert_eq!(patients(&q, "dr-neema"), [("P1".into(), 1)]);
        assert_eq!(q.finished.iter().map(|e| e.patient.as_str()).collect::<Vec<_>>(), ["P3", "P2"]);
    }

    #[test]
    fn a_finished_booking_stays_finished_and_unknown_or_foreign_updates_change_nothing() {
        let mut log = Log::new();
        let p1 = log.book("amina", "dr-neema", "P1", "routine");
        log.book("amina", "dr-juma", "J1", "routine");
        log.update("dr-neema", "dr-neema", p1, json!({"status": "completed"}));
        log.update("dr-neema", "dr-neema", p1, json!({"status": "confirmed"}));
        log.update("dr-neema", "dr-neema", MessageId(uuid::Uuid::now_v7()), json!({"status": "confirmed"}));
        // dr-juma's queue named on dr-neema's booking: the update's queue must match.
        log.update("dr-juma", "dr-juma", p1, json!({"status": "confirmed"}));
        let q = log.derive();
        assert_eq!(q.finished[0].status, "completed");
        assert_eq!(patients(&q, "dr-neema"), []);
        assert_eq!(patients(&q, "dr-juma"), [("J1".into(), 1)]);
    }

    #[test]
    fn a_body_that_does_not_parse_is_skipped() {
        let id = MessageId(uuid::Uuid::now_v7());
        let events = [
            QueueEvent { id, hlc: 1, from: "amina", kind: BOOK, body: "{\"queue\": 3}" },
            QueueEvent { id, hlc: 2, from: "amina", kind: "chat", body: "{}" },
        ];
        assert_eq!(derive(&events), Queues::default());
    }

    #[test]
    fn only_a_cancel_alone_may_come_from_someone_other_than_the_doctor() {
        let b = MessageId(uuid::Uuid::now_v7());
        let body = |f: serde_json::Value| merged(json!({"queue": "dr-neema", "booking": b}), f).to_string();
        assert_eq!(owner_required(UPDATE, &body(json!({"status": "cancelled"}))), None);
        for f in [
            json!({"status": "completed"}),
            json!({"status": "confirmed"}),
            json!({"urgency": "urgent"}),
            json!({"status": "cancelled", "urgency": "urgent"}),
        ] {
            assert_eq!(owner_required(UPDATE, &body(f)), Some("dr-neema".into()));
        }
        assert_eq!(owner_required(BOOK, &body(json!({}))), None);
    }

    /// A random history of bookings and updates by doctor, bookers and others.
    fn history() -> impl Strategy<Value = Vec<(u8, u8, u8, u8)>> {
        prop::collection::vec((0u8..4, 0u8..8, 0u8..6, 0u8..3), 1..40)
    }

    fn build(ops: &[(u8, u8, u8, u8)]) -> Log {
        let mut log = Log::new();
        let mut booked = Vec::new();
        let users = ["amina", "baraka", "dr-neema"];
        let urg = ["urgent", "soon", "routine"];
        for &(op, target, change, who) in ops {
            let from = users[usize::from(who)];
            if op == 0 || booked.is_empty() {
                booked.push(log.book(from, "dr-neema", &format!("P{}", booked.len()), urg[usize::from(change % 3)]));
                continue;
            }
            let b = booked[usize::from(target) % booked.len()];
            let fields = match change {
                0 => json!({"status": "confirmed"}),
                1 => json!({"status": "completed"}),
                2 => json!({"status": "cancelled"}),
                3 => json!({"status": "rescheduled", "due_at": T0 + u64::from(target) * 7_000}),
                4 => json!({"urgency": urg[usize::from(target % 3)]}),
                _ => json!({"status": "confirmed", "urgency": "urgent"}),
            };
            log.update(from, "dr-neema", b, fields);
        }
        log
    }

    proptest! {
        /// A hub and its cloud receive a room's messages in different orders; both derive
        /// the same queue, with positions 1..n.
        #[test]
        fn any_arrival_order_derives_the_same_queues(ops in history(), seed in any::<u64>()) {
            let log = build(&ops);
            let events = log.events();
            let mut shuffled = events.clone();
            let mut rng = seed;
            for i in (1..shuffled.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let a = derive(&events);
            prop_assert_eq!(&a, &derive(&shuffled));
            for q in &a.queues {
                let positions: Vec<Option<u32>> = q.entries.iter().map(|e| e.position).collect();
                prop_assert_eq!(positions, (1..=q.entries.len() as u32).map(Some).collect::<Vec<_>>());
                prop_assert!(q.entries.iter().all(|e| !e.is_finished()));
            }
            prop_assert!(a.finished.iter().all(Entry::is_finished));
        }
    }
}
