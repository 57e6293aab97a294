//! The writer's side of the hub ↔ cloud link: applying a peer's batch idempotently,
//! recording what a peer acknowledged (and telling senders `forwarded`), and the
//! handshake bookkeeping (epochs, rooms).

use outpost_shared::frames::ReceiptState;
use outpost_shared::uplink::batch::{Entry, WireMessage, WireReceipt};
use outpost_shared::{Cursor, RoomId};
use rusqlite::{OptionalExtension, params};

use super::{Writer, to_sql};
use crate::{Forwarded, LogEntry, PeerState, StoreError};

impl Writer {
    /// Applies a batch from `peer`. Messages and receipts already held are skipped (the
    /// id is the idempotency key forever), so a batch replayed after a reconnect changes
    /// nothing. Returns how many entries were new.
    pub(super) fn import(
        &mut self,
        peer: &str,
        entries: Vec<Entry>,
        peer_hwm: Cursor,
        log: &mut Vec<LogEntry>,
        new_rooms: &mut Vec<RoomId>,
    ) -> Result<usize, StoreError> {
        let mut fresh = 0;
        for e in entries {
            let added = match e {
                Entry::Message(m) => self.import_message(peer, m, log, new_rooms)?,
                Entry::Receipt(r) => self.import_receipt(peer, r, log)?,
            };
            fresh += usize::from(added);
        }
        self.conn
            .prepare_cached(
                "INSERT INTO peers (peer, recv_hwm, last_contact) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer) DO UPDATE SET recv_hwm = max(recv_hwm, excluded.recv_hwm), last_contact = excluded.last_contact",
            )?
            .execute(params![peer, to_sql(peer_hwm.0), to_sql(super::now_ms())])?;
        Ok(fresh)
    }

    fn import_message(
        &mut self,
        peer: &str,
        m: WireMessage,
        log: &mut Vec<LogEntry>,
        new_rooms: &mut Vec<RoomId>,
    ) -> Result<bool, StoreError> {
        let (id, hlc) = (m.id, m.hlc);
        let Ok(msg) = m.into_stored() else {
            // Peers are authenticated, so this is a bug on the other side; refusing the
            // batch would retry it forever, so the entry is skipped and reported.
            tracing::error!(peer, %id, "a peer sent a message whose body is not JSON; skipped");
            return Ok(false);
        };
        // Keep the sender's stamp and move our clock past it: replies made here sort after.
        self.clock.observe(hlc, super::now_ms());
        // A message the peer sent before (a batch resent after a lost ack) is not stored twice.
        Ok(self.insert_message(msg, Some(peer), None, log, new_rooms)?.is_some())
    }

    fn import_receipt(&mut self, peer: &str, r: WireReceipt, log: &mut Vec<LogEntry>) -> Result<bool, StoreError> {
        let msg_peer: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT origin_peer FROM messages WHERE id = ?1")?
            .query_row([r.id.as_bytes().as_slice()], |row| row.get(0))
            .optional()?;
        // A receipt about a message that came from a third peer goes on to it.
        let msg_peer = msg_peer.flatten();
        self.receipt(r.id, r.state, r.by.as_ref(), r.target, r.room, r.at, Some(peer), msg_peer.as_deref(), log)
    }

    /// `peer` durably holds our log up to `sent_hwm`; the senders of `forwarded` learn
    /// that their message reached it.
    pub(super) fn peer_acked(
        &mut self,
        peer: &str,
        sent_hwm: Cursor,
        forwarded: Vec<Forwarded>,
        at: u64,
        log: &mut Vec<LogEntry>,
    ) -> Result<(), StoreError> {
        for f in forwarded {
            self.receipt(f.id, ReceiptState::Forwarded, None, f.sender, f.room, at, None, None, log)?;
        }
        self.conn
            .prepare_cached(
                "INSERT INTO peers (peer, sent_hwm, last_contact) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer) DO UPDATE SET sent_hwm = max(sent_hwm, excluded.sent_hwm), last_contact = excluded.last_contact",
            )?
            .execute(params![peer, to_sql(sent_hwm.0), to_sql(at)])?;
        Ok(())
    }

    /// Records a peer's handshake. A different epoch means the peer's database is new:
    /// what we sent it before is gone, so we start over from the beginning of our log,
    /// and what it sent us before is gone from it too, so that goes back to it as well
    /// (`own_until`: everything of ours up to now).
    pub(super) fn peer_hello(&mut self, peer: &str, epoch: &str, rooms: &[RoomId]) -> Result<PeerState, StoreError> {
        let known: Option<(String, i64, i64, i64)> = self
            .conn
            .prepare_cached("SELECT epoch, sent_hwm, recv_hwm, own_until FROM peers WHERE peer = ?1")?
            .query_row([peer], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let (sent, recv, own_until) = match known {
            Some((old, sent, recv, own)) if old == epoch || old.is_empty() => (sent, recv, own),
            Some((old, _, _, _)) => {
                tracing::warn!(peer, old_epoch = %old, new_epoch = epoch, "peer has a new database; resending everything");
                let head = to_sql(self.next_cursor.saturating_sub(1));
                self.conn
                    .prepare_cached("UPDATE peers SET own_until = ?2 WHERE peer = ?1")?
                    .execute(params![peer, head])?;
                // Its files went with its database: what it confirmed holding, it holds no more.
                self.conn.prepare_cached("DELETE FROM blob_peers WHERE peer = ?1")?.execute([peer])?;
                (0, 0, head)
            }
            None => (0, 0, 0),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO peers (peer, epoch, sent_hwm, recv_hwm, last_contact) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (peer) DO UPDATE SET epoch = excluded.epoch, sent_hwm = excluded.sent_hwm,
                   recv_hwm = excluded.recv_hwm, last_contact = excluded.last_contact",
            )?
            .execute(params![peer, epoch, sent, recv, to_sql(super::now_ms())])?;
        let sent = if self.note_peer_rooms(peer, rooms)? > 0 { 0 } else { sent };
        let mut stmt = self.conn.prepare_cached("SELECT room FROM peer_rooms WHERE peer = ?1")?;
        let all = stmt
            .query_map([peer], |r| r.get::<_, String>(0))?
            .filter_map(|r| r.ok().and_then(|s| RoomId::new(s).ok()))
            .collect();
        Ok(PeerState {
            sent_hwm: Cursor(u64::try_from(sent).unwrap_or(0)),
            recv_hwm: Cursor(u64::try_from(recv).unwrap_or(0)),
            rooms: all,
            own_until: Cursor(u64::try_from(own_until).unwrap_or(0)),
        })
    }

    /// Adds rooms `peer` serves; returns how many are new. New rooms reset what we
    /// believe the peer holds to the start of our log: older entries in those rooms were
    /// skipped while the room was unknown, and the peer deduplicates the rest.
    pub(super) fn note_peer_rooms(&mut self, peer: &str, rooms: &[RoomId]) -> Result<usize, StoreError> {
        let mut added = 0;
        for r in rooms {
            added += self
                .conn
                .prepare_cached("INSERT OR IGNORE INTO peer_rooms (peer, room) VALUES (?1, ?2)")?
                .execute(params![peer, r.as_str()])?;
        }
        if added > 0 {
            self.conn.prepare_cached("UPDATE peers SET sent_hwm = 0 WHERE peer = ?1")?.execute([peer])?;
        }
        Ok(added)
    }
}
