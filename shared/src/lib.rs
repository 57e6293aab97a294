//! Outpost's protocol as pure code.
//!
//! Everything the hub, the cloud and their clients must agree on lives here, free of any
//! I/O: typed ids, the message envelope, the v1 device frames and their stable error
//! codes, the hybrid logical clock and device tokens. Nothing in this crate reads a clock
//! or touches a socket; callers pass `now` in. That keeps the rules testable by property
//! tests and identical on every replica.

pub mod bundle;
pub mod clinical;
pub mod delivery;
pub mod e2e;
pub mod error_code;
pub mod frames;
pub mod hlc;
pub mod ids;
pub mod media;
pub mod policy;
pub mod queue;
pub mod record;
pub mod revocation;
pub mod token;
// Renewal is the token's own business (it verifies through `token::TokenVerifier`);
// reachable as `outpost_shared::renewal` as before.
pub use token::renewal;
pub mod uplink;

pub use error_code::ErrorCode;
pub use frames::{Body, ClientFrame, DecodeError, MessageBody, OutgoingMsg, ServerFrame};
pub use hlc::{Hlc, HlcClock};
pub use ids::{Cursor, DeviceId, Epoch, IdError, MessageId, MessageKind, Priority, RelayId, RoomId, Seq, UserId};
pub use policy::{Action, Denied, Policy};
pub use revocation::{Revocation, RevocationList, Revoked};
pub use token::{Claims, Lineage, Role, TokenError, TokenSigner, TokenVerifier};

/// The device protocol version this crate speaks (`"v": 1` in every frame).
pub const PROTOCOL_VERSION: u64 = 1;
