//! Control-stream frames: a 4-byte big-endian length, then a postcard-encoded [`Control`].

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::ids::{Cursor, RoomId};
use crate::media::BlobId;
use crate::revocation::Revocation;
use crate::uplink::batch::WireMessage;

/// Largest control frame either side accepts (a `Hello` listing many rooms fits easily).
pub const MAX_CONTROL_LEN: usize = 256 * 1024;

/// Version of the link protocol this build speaks (`Hello.v`).
///
/// Version 2 added frames after `Revocations` (postcard numbers variants in order, so old
/// frames keep their encoding). A peer that speaks only version 1 cannot decode them: the
/// cloud answers a version-1 hub with `Welcome` and never sends it a newer frame; it answers
/// a version-2 hub with `WelcomeV2`, which tells the hub it may use them too. Version 3
/// added the LAN certificate frames (`LanName` onwards), sent only when both ends speak 3.
pub const LINK_VERSION: u16 = 3;
/// Oldest link version a cloud still accepts.
pub const MIN_LINK_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// First frame from the hub. `relay` must match its certificate; `epoch` names its
    /// database (a new one resets what the cloud sends down); `rooms` are the rooms the
    /// hub serves (replies in them are sent down).
    Hello { v: u16, relay: String, epoch: String, rooms: Vec<RoomId>, dicts: Vec<u32> },
    /// The cloud's answer. `epoch` names the cloud's database (a new one means it lost
    /// what the hub sent); `hwm`: everything the hub sent up to this cursor is durable in
    /// the cloud (the hub may resume after it).
    Welcome { cloud: String, epoch: String, hwm: Cursor },
    /// The batch was committed by the receiver.
    Ack { batch: u64 },
    /// The hub serves more rooms now.
    Rooms { rooms: Vec<RoomId> },
    /// The receiver refuses the link (and closes it).
    Refused { code: String, message: String },
    /// Cloud → hub: entries of the cloud's token revocation list. The whole list is sent
    /// after every handshake (in frames of at most [`REVOCATIONS_PER_FRAME`] entries) and
    /// again when it changes; the hub merges idempotently. A hub never sends this.
    Revocations { entries: Vec<Revocation> },
    // ---- link version 2: sent only to a peer that announced version 2 ----
    /// The cloud's answer to a hub that said `Hello { v: 2.. }`: `Welcome`, plus the link
    /// version both ends will speak.
    WelcomeV2 { cloud: String, epoch: String, hwm: Cursor, v: u16 },
    /// Files the sender needs now (a device asked for them) and knows only from messages:
    /// the receiver sends each it holds and may share (named in the sender's rooms) on the
    /// bulk lane ahead of its other files. A hub rebuilt from the cloud gets older files
    /// this way, on demand. At most [`WANTS_PER_FRAME`] per frame; resent after a reconnect.
    WantBlobs { blobs: Vec<BlobId> },
    /// Hub → cloud: the hub's Ed25519 renewal public key, after every handshake and when
    /// its delegation passes half its life. The cloud answers with `Delegation`.
    RenewalKey { key: [u8; 32] },
    /// Cloud → hub: the cloud's delegation to that key (a compact JWS, see
    /// `outpost_shared::renewal`), which lets the hub renew its devices' tokens offline.
    /// A hub never sends this.
    Delegation { token: String },
    /// Hub → cloud (version 2): a device asked for history the hub no longer holds
    /// (retention removed it after the cloud confirmed it). Messages of `room` stamped
    /// before `before_hlc`, newest first, at most `limit` (≤ [`HISTORY_REQUEST_MAX`]).
    /// `id` pairs the answer with the request; the hub has checked the device may read
    /// the room, and the cloud answers only for rooms the hub serves.
    HistoryRequest { id: u64, room: RoomId, before_hlc: Hlc, limit: u32 },
    /// Cloud → hub (version 2): the answer to `HistoryRequest { id }`, oldest first;
    /// `more`: older messages remain. `error` (a stable code) instead when the cloud
    /// refuses or cannot read; `messages` is then empty.
    HistoryAnswer { id: u64, messages: Vec<WireMessage>, more: bool, error: Option<String> },
    // ---- link version 3 ----
    /// Cloud → hub: the hub's own name on its village network (`<relay id>.<domain>`),
    /// sent after the handshake when the cloud obtains LAN certificates (an `[acme]`
    /// section). The hub asks for a certificate for it with `CertRequest` when it has none
    /// for that name or its certificate is due for renewal.
    LanName { name: String },
    /// Hub → cloud: a PKCS#10 certificate signing request (DER) for the name `LanName`
    /// gave, made with a key that never leaves the hub. The cloud has its CA issue the
    /// certificate (ACME DNS-01) and answers `CertIssued` or `CertRefused`.
    CertRequest { csr: Vec<u8> },
    /// Cloud → hub: the certificate chain for the hub's last request (PEM, the hub's
    /// certificate first).
    CertIssued { chain_pem: String },
    /// Cloud → hub: the last request could not be served now (`code` is stable, `message`
    /// says why); the hub keeps its current certificate and asks again later.
    CertRefused { code: String, message: String },
}

/// Largest CSR a hub may send (an ECDSA P-256 request for one name is about 300 bytes).
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// Most messages one `HistoryRequest` may ask for (the devices' own page limit).
pub const HISTORY_REQUEST_MAX: u32 = 200;
/// Bytes of message bodies the cloud puts in one `HistoryAnswer` at most: with the other
/// fields of up to [`HISTORY_REQUEST_MAX`] messages the frame stays below
/// [`MAX_CONTROL_LEN`]; a page cut short says `more`.
pub const HISTORY_ANSWER_BODY_BYTES: usize = 160 * 1024;

/// Blobs per `WantBlobs` frame (33 bytes each).
pub const WANTS_PER_FRAME: usize = 256;

/// Entries per `Revocations` frame (each well under 200 bytes, so a frame stays far below
/// [`MAX_CONTROL_LEN`]).
pub const REVOCATIONS_PER_FRAME: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control frame of {len} bytes exceeds {MAX_CONTROL_LEN}")]
    TooLarge { len: usize },
    #[error("undecodable control frame: {0}")]
    Decode(String),
}

impl Control {
    /// Length-prefixed encoding.
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Checks a length prefix before reading the body.
    pub fn check_len(prefix: [u8; 4]) -> Result<usize, ControlError> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_CONTROL_LEN { Err(ControlError::TooLarge { len }) } else { Ok(len) }
    }

    pub fn decode(body: &[u8]) -> Result<Self, ControlError> {
        postcard::from_bytes(body).map_err(|e| ControlError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wire() -> impl Strategy<Value = WireMessage> {
        (any::<u64>(), any::<u128>(), "[a-z][a-z0-9-]{0,12}", "\\PC{0,30}", any::<u64>(), any::<u64>()).prop_map(
            |(cursor, id, room, text, hlc, at)| WireMessage {
                cursor: Cursor(cursor),
                id: crate::ids::MessageId::from_bytes(id.to_be_bytes()),
                room: RoomId::new(room).unwrap_or_else(|e| panic!("{e}")),
                kind: crate::ids::MessageKind::new("chat").unwrap_or_else(|e| panic!("{e}")),
                priority: crate::ids::Priority::Normal,
                body: serde_json::json!({ "text": text }).to_string(),
                seq: crate::ids::Seq(hlc % 1000),
                reply_to: None,
                from: crate::ids::UserId::new("amina").unwrap_or_else(|e| panic!("{e}")),
                device: crate::ids::DeviceId::new("phone-1").unwrap_or_else(|e| panic!("{e}")),
                hlc: Hlc(hlc),
                at,
            },
        )
    }

    fn control() -> impl Strategy<Value = Control> {
        let room = "[a-z][a-z0-9-]{0,12}".prop_map(|s| RoomId::new(s).unwrap_or_else(|e| panic!("{e}")));
        prop_oneof![
            (
                any::<u16>(),
                "\\PC{0,20}",
                "\\PC{0,40}",
                prop::collection::vec(room.clone(), 0..5),
                prop::collection::vec(any::<u32>(), 0..3)
            )
                .prop_map(|(v, relay, epoch, rooms, dicts)| Control::Hello {
                    v,
                    relay,
                    epoch,
                    rooms,
                    dicts
                }),
            ("\\PC{0,20}", "[a-f0-9-]{0,36}", any::<u64>()).prop_map(|(cloud, epoch, h)| Control::Welcome {
                cloud,
                epoch,
                hwm: Cursor(h)
            }),
            ("\\PC{0,20}", "[a-f0-9-]{0,36}", any::<u64>(), any::<u16>())
                .prop_map(|(cloud, epoch, h, v)| { Control::WelcomeV2 { cloud, epoch, hwm: Cursor(h), v } }),
            any::<[u8; 32]>().prop_map(|key| Control::RenewalKey { key }),
            "[A-Za-z0-9._-]{0,200}".prop_map(|token| Control::Delegation { token }),
            any::<u64>().prop_map(|batch| Control::Ack { batch }),
            prop::collection::vec(any::<[u8; 32]>(), 0..4)
                .prop_map(|b| Control::WantBlobs { blobs: b.into_iter().map(BlobId).collect() }),
            (any::<u64>(), room.clone(), any::<u64>(), any::<u32>())
                .prop_map(|(id, room, h, limit)| { Control::HistoryRequest { id, room, before_hlc: Hlc(h), limit } }),
            (any::<u64>(), prop::collection::vec(wire(), 0..3), any::<bool>(), prop::option::of("[a-z_]{1,20}"))
                .prop_map(|(id, messages, more, error)| Control::HistoryAnswer { id, messages, more, error }),
            prop::collection::vec(room, 0..5).prop_map(|rooms| Control::Rooms { rooms }),
            "[a-z0-9.-]{0,60}".prop_map(|name| Control::LanName { name }),
            prop::collection::vec(any::<u8>(), 0..400).prop_map(|csr| Control::CertRequest { csr }),
            "\\PC{0,400}".prop_map(|chain_pem| Control::CertIssued { chain_pem }),
            ("[a-z_]{1,10}", "\\PC{0,40}").prop_map(|(code, message)| Control::CertRefused { code, message }),
            ("[a-z_]{1,10}", "\\PC{0,40}").prop_map(|(code, message)| Control::Refused { code, message }),
            prop::collection::vec(("\\PC{0,36}", any::<u64>(), any::<bool>()), 0..4).prop_map(|v| {
                let entries = v
                    .into_iter()
                    .map(|(s, t, user)| Revocation {
                        what: if user {
                            crate::revocation::Revoked::User { user: s.clone(), issued_before: t }
                        } else {
                            crate::revocation::Revoked::Token(s.clone())
                        },
                        reason: s,
                        at: t,
                    })
                    .collect();
                Control::Revocations { entries }
            }),
        ]
    }

    proptest! {
        #[test]
        fn control_frames_round_trip(c in control()) {
            let bytes = c.encode();
            let len = Control::check_len([bytes[0], bytes[1], bytes[2], bytes[3]]).unwrap_or(usize::MAX);
            prop_assert_eq!(len, bytes.len() - 4);
            prop_assert_eq!(Control::decode(&bytes[4..]), Ok(c));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Control::decode(&bytes);
        }
    }

    #[test]
    fn oversized_prefix_is_refused() {
        assert!(Control::check_len(u32::MAX.to_be_bytes()).is_err());
    }
}
