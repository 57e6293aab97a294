//! A generator of realistic village traffic, for training the batch dictionary and for
//! measuring bytes per message on the uplink.
//!
//! The mix follows what a hub carries in a day: chat (about half), structured vitals
//! reports, the odd emergency alert, and custody receipts (`delivered`/`read`) for earlier
//! messages. Names, rooms, devices and phrases come from small fixed pools as they would
//! in one village; ids are real UUIDv7 with increasing timestamps. Deterministic for a
//! given seed, so a regenerated dictionary only changes when the generator does.

use outpost_shared::frames::ReceiptState;
use outpost_shared::uplink::batch::{Entry, WireMessage, WireReceipt};
use outpost_shared::{Cursor, DeviceId, Hlc, MessageId, MessageKind, Priority, RoomId, Seq, UserId};
use serde_json::json;

/// xorshift64*: enough randomness for test data, no dependency, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const USERS: &[&str] = &[
    "amina", "baraka", "chausiku", "daudi", "eshe", "faraji", "gift", "halima", "imani", "juma", "khadija", "lulu",
    "mosi", "neema", "omari", "pendo", "rehema", "saidi", "tumaini", "zawadi",
];
const DOCTORS: &[&str] = &["dr-neema", "dr-okello", "dr-wanjiru"];
const ROOMS: &[&str] = &["clinic", "maternity", "village-north", "village-south", "vaccination", "pharmacy"];
const PHRASES: &[&str] = &[
    "Mama {n} amefika kliniki leo asubuhi",
    "Patient in house {n} has fever since yesterday",
    "Tunahitaji dawa za malaria, zimebaki {n} tu",
    "Child weighed {n} kg at today's visit",
    "BP check done for {n} mothers",
    "Nimemaliza ziara za nyumbani, wagonjwa {n}",
    "Please call back when the network is up",
    "Vaccination session starts at {n} o'clock",
    "Asante daktari, nitafuatilia kesho",
    "Referral to district hospital needed for case {n}",
    "ok",
    "Sawa",
    "Received, thank you",
];
const NOTES: &[&str] =
    &["stable", "mild dehydration", "cough 3 days", "follow up in 1 week", "referred", "no complaints"];

/// Generates a stream of entries as one hub's log would hold them.
#[derive(Debug)]
pub struct Corpus {
    rng: Rng,
    cursor: u64,
    now_ms: u64,
    devices: Vec<String>,
    seqs: Vec<u64>,
    recent: Vec<(MessageId, usize, usize)>,
}

impl Corpus {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let devices = USERS.iter().map(|u| format!("{u}-phone-{:04x}", rng.below(0x10000))).collect();
        Self { rng, cursor: 0, now_ms: 1_790_000_000_000, devices, seqs: vec![0; USERS.len()], recent: Vec::new() }
    }

    fn uuid7(&mut self) -> MessageId {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&self.now_ms.to_be_bytes()[2..]);
        let r1 = self.rng.next_u64().to_be_bytes();
        let r2 = self.rng.next_u64().to_be_bytes();
        b[6..12].copy_from_slice(&r1[..6]);
        b[12..].copy_from_slice(&r2[..4]);
        b[6] = (b[6] & 0x0f) | 0x70;
        b[8] = (b[8] & 0x3f) | 0x80;
        MessageId::from_bytes(b)
    }

    fn phrase(&mut self) -> String {
        let p = *self.rng.pick(PHRASES);
        p.replace("{n}", &(1 + self.rng.below(40)).to_string())
    }

    /// The next entry of the log.
    pub fn next_entry(&mut self) -> Entry {
        self.cursor += 1;
        self.now_ms += 200 + self.rng.below(5_000);
        let roll = self.rng.below(100);
        if roll < 28 && !self.recent.is_empty() {
            let (id, sender, room) = *self.rng.pick(&self.recent);
            let reader = self.rng.pick(DOCTORS);
            let state = if self.rng.below(2) == 0 { ReceiptState::Delivered } else { ReceiptState::Read };
            return Entry::Receipt(WireReceipt {
                cursor: Cursor(self.cursor),
                id,
                state,
                by: Some(user(reader)),
                target: user(USERS[sender]),
                room: room_id(ROOMS[room]),
                at: self.now_ms,
            });
        }
        let u = self.rng.below(USERS.len() as u64) as usize;
        let room = self.rng.below(ROOMS.len() as u64) as usize;
        let (kind, priority, body) = if roll < 30 {
            let text = format!(
                "{} - {}",
                self.phrase(),
                self.rng.pick(&["haemorrhage", "seizure", "obstructed labour", "snake bite"])
            );
            ("alert", Priority::Emergency, json!({"text": text, "location": format!("house {}", self.rng.below(300))}))
        } else if roll < 50 {
            let sys = 100 + self.rng.below(60);
            let dia = 60 + self.rng.below(40);
            let body = json!({
                "patient": format!("P-{:06}", self.rng.below(5000)),
                "bp": format!("{sys}/{dia}"),
                "pulse": 60 + self.rng.below(60),
                "temp": 36.0 + (self.rng.below(40) as f64) / 10.0,
                "spo2": 90 + self.rng.below(10),
                "notes": self.rng.pick(NOTES),
            });
            ("report", Priority::Normal, body)
        } else {
            ("chat", Priority::Normal, json!({"text": self.phrase()}))
        };
        self.seqs[u] += 1;
        let id = self.uuid7();
        self.recent.push((id, u, room));
        if self.recent.len() > 50 {
            self.recent.remove(0);
        }
        Entry::Message(WireMessage {
            cursor: Cursor(self.cursor),
            id,
            room: room_id(ROOMS[room]),
            kind: MessageKind::new(kind).unwrap_or_else(|e| panic!("{e}")),
            priority,
            body: body.to_string(),
            seq: Seq(self.seqs[u]),
            reply_to: None,
            from: user(USERS[u]),
            device: DeviceId::new(self.devices[u].clone()).unwrap_or_else(|e| panic!("{e}")),
            hlc: Hlc::new(self.now_ms, 0),
            at: self.now_ms,
        })
    }

    pub fn take(&mut self, n: usize) -> Vec<Entry> {
        (0..n).map(|_| self.next_entry()).collect()
    }
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap_or_else(|e| panic!("{e}"))
}
fn room_id(s: &str) -> RoomId {
    RoomId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

/// The JSON a device would have sent for an entry (the raw-JSON baseline of bytes/msg).
pub fn as_device_json(e: &Entry) -> String {
    match e {
        Entry::Message(m) => json!({"v":1,"type":"message","cursor":m.cursor,"msg":{
            "id": m.id, "room": m.room, "kind": m.kind, "priority": m.priority,
            "body": serde_json::from_str::<serde_json::Value>(&m.body).unwrap_or_default(),
            "seq": m.seq, "from": m.from, "device": m.device, "hlc": m.hlc, "at": m.at}})
        .to_string(),
        Entry::Receipt(r) => {
            json!({"v":1,"type":"receipt","id": r.id, "state": r.state, "by": r.by, "room": r.room, "at": r.at})
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::uplink::batch::{Lane, encode};
    use outpost_shared::uplink::dict;

    /// The shipped dictionary must actually help on this traffic (it would silently stop
    /// helping if the entry format changed without retraining).
    #[test]
    fn the_dictionary_beats_plain_zstd_on_village_traffic() {
        let mut c = Corpus::new(99);
        let mut with = 0;
        let mut without = 0;
        let mut json = 0;
        let mut n = 0;
        for size in [5usize, 20, 100] {
            for _ in 0..10 {
                let entries = c.take(size);
                n += entries.len();
                json += entries.iter().map(|e| as_device_json(e).len()).sum::<usize>();
                let d = dict::get(dict::CURRENT).map(|d| (dict::CURRENT, d));
                with += encode(1, Lane::Normal, Cursor(0), &entries, d).map(|b| b.len()).unwrap_or(usize::MAX);
                without += encode(1, Lane::Normal, Cursor(0), &entries, None).map(|b| b.len()).unwrap_or(usize::MAX);
            }
        }
        eprintln!("bytes/entry: json {} zstd {} zstd+dict {}", json / n, without / n, with / n);
        assert!(with < without, "dictionary {with} vs plain {without}");
    }
}
