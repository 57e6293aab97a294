//! Protocol v1 device frames: what phones and browsers exchange with a hub or the cloud.
//!
//! Every frame is a JSON object `{"v":1,"type":...}`. Decoding is two-step on purpose: a
//! cheap pass reads only `v` and `type` (so a wrong version or unknown type gets its own
//! stable error code), then the frame is parsed into the struct for its type. Unknown
//! fields are ignored, as the contract says. Message bodies are kept as raw JSON text
//! (`Body`) so the hub stores and forwards exactly the bytes the sender wrote without
//! re-serialising them.
//!
//! `join`/`leave` (named in the architecture, not in the v1 table) start and stop live
//! messages of one of the token's rooms on a connection.
//!
//! Extensions to the written contract (ignored by clients that do not know them):
//! `welcome.role`, `receipt.room` and `receipt.cursor`, and a missing `v` being read as 1
//! (the contract's own browser ping, `{"type":"ping"}`, has none).

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::PROTOCOL_VERSION;
use crate::error_code::ErrorCode;
use crate::hlc::Hlc;
use crate::ids::{Cursor, DeviceId, Epoch, MessageId, MessageKind, Priority, RoomId, Seq, UserId};
use crate::token::Role;

/// A message body: any JSON value, kept as the exact text the sender wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Body(Box<RawValue>);

impl Body {
    /// Parses `json` (must be one valid JSON value).
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json.to_owned()).map(Self)
    }
    /// Wraps a value by serialising it.
    pub fn from_value<T: Serialize>(v: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(v).map(Self)
    }
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
    /// Size in bytes, as counted against the body limit.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }
    /// How deeply arrays and objects nest in the body: `0` for a scalar, `1` for `[1]`,
    /// `2` for `{"a":[1]}`. serde_json's recursion limit does not apply to a raw value, so
    /// a body thousands of levels deep decodes; the hub checks this against its limit so it
    /// never stores and fans out JSON that its clients' parsers refuse or overflow on.
    pub fn depth(&self) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        // The text is valid JSON, so brackets outside strings are structure.
        for &b in self.0.get().as_bytes() {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// The message a device sends (`send.msg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingMsg {
    pub id: MessageId,
    pub room: RoomId,
    pub kind: MessageKind,
    #[serde(default = "default_priority")]
    pub priority: Priority,
    pub body: Body,
    pub seq: Seq,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}

fn default_priority() -> Priority {
    Priority::Normal
}

/// A stored message as servers show it (`message.msg`): the sent fields plus who sent it,
/// from which device, its HLC stamp and the server's receive time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    pub id: MessageId,
    pub room: RoomId,
    pub kind: MessageKind,
    pub priority: Priority,
    pub body: Body,
    pub seq: Seq,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    pub from: UserId,
    pub device: DeviceId,
    pub hlc: Hlc,
    /// Server receive time, milliseconds since the Unix epoch.
    pub at: u64,
}

/// A message with its log position (`message` frames and `history` entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Positioned {
    pub cursor: Cursor,
    pub msg: MessageBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptState {
    Stored,
    Forwarded,
    Delivered,
    Read,
}

impl ReceiptState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Forwarded => "forwarded",
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stored" => Some(Self::Stored),
            "forwarded" => Some(Self::Forwarded),
            "delivered" => Some(Self::Delivered),
            "read" => Some(Self::Read),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Away,
    /// Only servers say this, when a user's last device leaves.
    Offline,
}

// ---------------------------------------------------------------------------------------
// Client → server

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub token: String,
    pub device: DeviceId,
    #[serde(default)]
    pub cursor: Option<Cursor>,
    #[serde(default)]
    pub epoch: Option<Epoch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    pub msg: OutgoingMsg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub cursor: Cursor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Read {
    pub room: RoomId,
    pub id: MessageId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Typing {
    pub room: RoomId,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub status: PresenceStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub room: RoomId,
    #[serde(default)]
    pub before: Option<Cursor>,
    /// At most [`HISTORY_MAX_LIMIT`]; larger values are clamped.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Extension (v1): page back through what only the cloud still holds: messages of the
    /// room stamped before this `hlc` (the stamp of the oldest message the device has).
    /// Takes the place of `before` once a page brought messages from the cloud (those
    /// have no position in the hub's log; see docs/protocol.md, "History beyond the hub").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_hlc: Option<Hlc>,
}

/// The largest `history.limit` a server honours.
pub const HISTORY_MAX_LIMIT: u32 = 200;
/// The page size when `history.limit` is absent.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;

/// One step of a call between two people on the same server (docs/protocol.md, "Calls").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallSignal {
    /// The caller rings the callee's devices.
    Invite,
    /// A callee's device is ringing.
    Ringing,
    /// The callee answered on this device: the call goes on between the two devices.
    Accept,
    /// The callee declined.
    Decline,
    /// The callee is in another call.
    Busy,
    /// Either side ended the call (the caller before an answer: it was missed).
    Hangup,
    /// WebRTC session description from the caller.
    Offer,
    /// WebRTC session description from the callee.
    Answer,
    /// A WebRTC ICE candidate, either way.
    Ice,
    /// Server to caller only: no device of the callee is connected to this server with
    /// the room.
    Unavailable,
}

/// `call` (protocol v1 extension): a call step for `to`'s devices, relayed by the server
/// and never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The call's id, made by the caller (a UUID), on every step of it.
    pub call: MessageId,
    /// A room both people are members of: a call is between members of a room.
    pub room: RoomId,
    pub to: UserId,
    /// Once a device of `to` accepted: that device only. Otherwise every device of `to`
    /// holding the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    pub signal: CallSignal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<bool>,
    /// The session description of `offer` and `answer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
    /// The candidate of `ice`, as the browser gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<serde_json::Value>,
}

/// `join` / `leave`: start or stop live messages of one of the token's rooms on this
/// connection (membership itself comes from the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRef {
    pub room: RoomId,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Hello(Hello),
    Send(Send),
    Ack(Ack),
    Read(Read),
    Typing(Typing),
    Presence(Presence),
    History(History),
    Join(RoomRef),
    Leave(RoomRef),
    Ping,
    Call(Call),
}

// ---------------------------------------------------------------------------------------
// Server → client

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub epoch: Epoch,
    pub cursor: Cursor,
    pub user: UserId,
    pub rooms: Vec<RoomId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Extension: which of `rooms` are end-to-end encrypted (bodies must be sealed
    /// envelopes, see `crate::e2e`). Omitted when none are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypted: Vec<RoomId>,
    /// Extension: retention removed confirmed messages at log positions up to here
    /// (their rooms' older history is in the cloud). A device resuming below it gets what
    /// is still held after its cursor and pages back with `history` for the rest
    /// (docs/protocol.md, "History beyond the hub"). Omitted when nothing was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_through: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: MessageId,
    pub cursor: Cursor,
    /// The message's stamp, as every other member receives it: where the message sorts
    /// in its room (docs/protocol.md, "The order of a room"). Added within v1, so a
    /// reader takes its absence (an older server) as unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlc: Option<Hlc>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: MessageId,
    pub state: ReceiptState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<UserId>,
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}

/// How far the signed-in user has read `room` on this server: every message up to
/// `cursor` (this server's cursor) was read on one of their devices. Sent after `welcome`
/// for each of the token's rooms with a mark, and live to the user's other connections
/// when one of them sends `read`, so reading on one device clears the unread count on the
/// others. A protocol v1 extension: older clients ignore it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadMark {
    pub room: RoomId,
    pub cursor: Cursor,
}

/// A renewed token for the device to keep in place of the one it signed in with (sent
/// once per session, after the token passed half its life). `expires_at` is the new
/// token's `exp`: seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRenewed {
    pub token: String,
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resync {
    pub epoch: Epoch,
    pub cursor: Cursor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), id: None }
    }
    pub fn with_id(mut self, id: Option<MessageId>) -> Self {
        self.id = id;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypingEvent {
    pub room: RoomId,
    pub user: UserId,
    pub active: bool,
}

/// `call` from the server: a call step from `from`'s device `from_device`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub call: MessageId,
    pub room: RoomId,
    pub from: UserId,
    /// Absent on `unavailable`, which the server sends itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_device: Option<DeviceId>,
    pub signal: CallSignal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub user: UserId,
    pub status: PresenceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub room: RoomId,
    pub messages: Vec<Positioned>,
    pub more: bool,
    /// Extension (v1): how many of `messages` the hub fetched from the cloud because
    /// retention removed them here. Those carry `cursor: 0` (no position in the hub's
    /// log); in a room retention pruned, the next page is asked for with `before_hlc`
    /// (the oldest stamp of this page). Omitted when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub from_cloud: u32,
    /// Extension (v1): older history of the room exists only in the cloud, which cannot
    /// be reached now; the page holds what this server has. Omitted when nothing is
    /// missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<HistoryGap>,
}

/// Why a history page stops short of the room's beginning (`HistoryPage::unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryGap {
    /// Stable, snake_case: [`HISTORY_IN_CLOUD`].
    pub code: String,
    pub message: String,
}

/// `HistoryGap::code`: older messages were removed from the hub by retention after the
/// cloud confirmed them, and the cloud is not reachable now.
pub const HISTORY_IN_CLOUD: &str = "history_in_cloud";

impl HistoryGap {
    /// The gap a hub reports while its uplink is down (or the cloud did not answer).
    pub fn in_cloud() -> Self {
        Self {
            code: HISTORY_IN_CLOUD.to_owned(),
            message: "older messages of this room are kept in the cloud, which cannot be reached now; \
                      ask again when the hub is connected"
                .to_owned(),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl HistoryPage {
    /// A page of this server's own messages (no extension fields).
    pub fn local(room: RoomId, messages: Vec<Positioned>, more: bool) -> Self {
        Self { room, messages, more, from_cloud: 0, unavailable: None }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    Welcome(Welcome),
    Stored(Stored),
    Message(Positioned),
    Receipt(Receipt),
    Resync(Resync),
    Error(ErrorFrame),
    Typing(TypingEvent),
    Presence(PresenceEvent),
    History(HistoryPage),
    Pong,
    /// Protocol v1 extension: clients that predate it ignore an unknown server frame.
    Token(TokenRenewed),
    /// Protocol v1 extension, like `Token`.
    ReadMark(ReadMark),
    /// Protocol v1 extension, like `Token`.
    Call(CallEvent),
}

// ---------------------------------------------------------------------------------------
// Codec

/// Why a frame was refused, with the code the peer should be told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    /// The message id, when the frame was a `send` whose id could still be read.
    pub id: Option<MessageId>,
}

impl DecodeError {
    fn bad(message: impl Into<String>) -> Self {
        Self { code: ErrorCode::BadFrame, message: message.into(), id: None }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default)]
    v: Option<serde_json::Value>,
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
}

/// Reads only `{"msg":{"id":...}}` so a refused `send` can still name its message.
#[derive(Deserialize)]
struct SendIdOnly {
    msg: IdOnly,
}
#[derive(Deserialize)]
struct IdOnly {
    id: MessageId,
}

/// How every encoded frame opens, up to its type's name; `head_fast` looks for it.
const OPENING: &str = "{\"v\":1,\"type\":\"";
const _: () = assert!(PROTOCOL_VERSION == 1, "OPENING names the protocol version");

/// The frame's type, read from its first bytes when the frame opens exactly as
/// `encode_with` writes it, `{"v":1,"type":"<name>",` followed by more fields: every frame
/// of this codec's clients, and the usual order elsewhere. The general path parses the
/// whole frame once only to find these two fields, and then `body` parses it again: for
/// a `send` that first pass was 40 % of the decoding (BENCHMARKS.md, 2026-12-04).
/// `body` still parses all of it, so a frame malformed further on is refused all the
/// same. Anything else (other order, spaces, an escaped name, a frame with no other
/// field, where no `body` pass would follow) takes the general path.
fn head_fast(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(OPENING)?;
    let end = rest.find('"')?;
    let ty = &rest[..end];
    (!ty.contains('\\') && rest.as_bytes().get(end + 1) == Some(&b',')).then_some(ty)
}

fn head(text: &str) -> Result<Cow<'_, str>, DecodeError> {
    if let Some(ty) = head_fast(text) {
        return Ok(Cow::Borrowed(ty));
    }
    let head: Head<'_> = serde_json::from_str(text)
        .map_err(|e| DecodeError::bad(format!("not a JSON object with a string \"type\": {e}")))?;
    match head.v {
        None => {}
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return Err(DecodeError {
                code: ErrorCode::UnsupportedVersion,
                message: format!("protocol version {other} is not supported; this server speaks \"v\": 1"),
                id: None,
            });
        }
    }
    head.ty.ok_or_else(|| DecodeError::bad("the frame has no \"type\" field"))
}

fn body<T: DeserializeOwned>(ty: &str, text: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::bad(format!("bad `{ty}` frame: {e}")))
}

/// Serialises `inner` (a JSON object) with `"v":1,"type":ty` in front.
fn encode_with<T: Serialize>(ty: &str, inner: &T) -> String {
    // Serialising these plain structs cannot fail (string keys, no maps with
    // non-string keys); an empty object is the safe fallback.
    let json = serde_json::to_string(inner).unwrap_or_else(|_| "{}".to_owned());
    let rest = json.strip_prefix('{').unwrap_or("}");
    let mut out = String::with_capacity(json.len() + ty.len() + 20);
    out.push_str(OPENING);
    out.push_str(ty);
    out.push('"');
    if rest != "}" {
        out.push(',');
    }
    out.push_str(rest);
    out
}

#[derive(Serialize)]
struct Empty {}

impl ClientFrame {
    /// Decodes one text frame from a device.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let ty = head(text)?;
        Ok(match ty.as_ref() {
            "hello" => Self::Hello(body("hello", text)?),
            "send" => Self::Send(body("send", text).map_err(|mut e: DecodeError| {
                e.id = serde_json::from_str::<SendIdOnly>(text).ok().map(|s| s.msg.id);
                e
            })?),
            "ack" => Self::Ack(body("ack", text)?),
            "read" => Self::Read(body("read", text)?),
            "typing" => Self::Typing(body("typing", text)?),
            "presence" => {
                let p: Presence = body("presence", text)?;
                if p.status == PresenceStatus::Offline {
                    return Err(DecodeError::bad("presence status must be \"online\" or \"away\""));
                }
                Self::Presence(p)
            }
            "history" => Self::History(body("history", text)?),
            "join" => Self::Join(body("join", text)?),
            "leave" => Self::Leave(body("leave", text)?),
            "ping" => Self::Ping,
            "call" => Self::Call(body("call", text)?),
            other => {
                return Err(DecodeError::bad(format!(
                    "unknown frame type {:?}; see protocol v1 for the client frames",
                    other.chars().take(40).collect::<String>()
                )));
            }
        })
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Send(_) => "send",
            Self::Ack(_) => "ack",
            Self::Read(_) => "read",
            Self::Typing(_) => "typing",
            Self::Presence(_) => "presence",
            Self::History(_) => "history",
            Self::Join(_) => "join",
            Self::Leave(_) => "leave",
            Self::Ping => "ping",
            Self::Call(_) => "call",
        }
    }

    /// Encodes the frame as a device would send it.
    pub fn encode(&self) -> String {
        let ty = self.type_name();
        match self {
            Self::Hello(f) => encode_with(ty, f),
            Self::Send(f) => encode_with(ty, f),
            Self::Ack(f) => encode_with(ty, f),
            Self::Read(f) => encode_with(ty, f),
            Self::Typing(f) => encode_with(ty, f),
            Self::Presence(f) => encode_with(ty, f),
            Self::History(f) => encode_with(ty, f),
            Self::Join(f) | Self::Leave(f) => encode_with(ty, f),
            Self::Ping => encode_with(ty, &Empty {}),
            Self::Call(f) => encode_with(ty, f),
        }
    }
}

impl ServerFrame {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Welcome(_) => "welcome",
            Self::Stored(_) => "stored",
            Self::Message(_) => "message",
            Self::Receipt(_) => "receipt",
            Self::Resync(_) => "resync",
            Self::Error(_) => "error",
            Self::Typing(_) => "typing",
            Self::Presence(_) => "presence",
            Self::History(_) => "history",
            Self::Pong => "pong",
            Self::Token(_) => "token",
            Self::ReadMark(_) => "read_mark",
            Self::Call(_) => "call",
        }
    }

    /// Encodes the frame for the wire.
    pub fn encode(&self) -> String {
        let ty = self.type_name();
        match self {
            Self::Welcome(f) => encode_with(ty, f),
            Self::Stored(f) => encode_with(ty, f),
            Self::Message(f) => encode_with(ty, f),
            Self::Receipt(f) => encode_with(ty, f),
            Self::Resync(f) => encode_with(ty, f),
            Self::Error(f) => encode_with(ty, f),
            Self::Typing(f) => encode_with(ty, f),
            Self::Presence(f) => encode_with(ty, f),
            Self::History(f) => encode_with(ty, f),
            Self::Pong => encode_with(ty, &Empty {}),
            Self::Token(f) => encode_with(ty, f),
            Self::ReadMark(f) => encode_with(ty, f),
            Self::Call(f) => encode_with(ty, f),
        }
    }

    /// Decodes a frame from a server (used by clients and tests).
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let ty = head(text)?;
        Ok(match ty.as_ref() {
            "welcome" => Self::Welcome(body("welcome", text)?),
            "stored" => Self::Stored(body("stored", text)?),
            "message" => Self::Message(body("message", text)?),
            "receipt" => Self::Receipt(body("receipt", text)?),
            "resync" => Self::Resync(body("resync", text)?),
            "error" => Self::Error(body("error", text)?),
            "typing" => Self::Typing(body("typing", text)?),
            "presence" => Self::Presence(body("presence", text)?),
            "history" => Self::History(body("history", text)?),
            "pong" => Self::Pong,
            "token" => Self::Token(body("token", text)?),
            "read_mark" => Self::ReadMark(body("read_mark", text)?),
            "call" => Self::Call(body("call", text)?),
            other => {
                return Err(DecodeError::bad(format!("unknown server frame type {other:?}")));
            }
        })
    }
}

#[cfg(test)]
mod tests;
