//! The audit log's event and record types (who did what; never message bodies or tokens).

use serde::Serialize;

/// What happened (the `event` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A device signed in (`hello` accepted).
    Login,
    /// A `hello` was refused (bad, expired, foreign or revoked token).
    LoginRefused,
    /// An action was refused by membership or role rules.
    Forbidden,
    /// An emergency alert was raised.
    Emergency,
    /// A revocation was recorded (by a command, or received from the cloud).
    Revocation,
    /// A live session was closed because its token was revoked.
    SessionRevoked,
    /// A device token was issued.
    TokenIssued,
    /// A relay was enrolled (bundle written) or a hub provisioned from a bundle.
    Enrollment,
    /// A relay's uplink was accepted / refused by the cloud.
    RelayConnected,
    RelayRefused,
    /// Someone read the audit log.
    AuditRead,
    /// The cloud delegated token renewal to a relay's key / a hub took a delegation.
    Delegation,
    /// A room was put under legal hold / released from it.
    Hold,
    HoldReleased,
    /// Messages were erased on request (not retention: an operator's deletion).
    Deletion,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::LoginRefused => "login_refused",
            Self::Forbidden => "forbidden",
            Self::Emergency => "emergency",
            Self::Revocation => "revocation",
            Self::SessionRevoked => "session_revoked",
            Self::TokenIssued => "token_issued",
            Self::Enrollment => "enrollment",
            Self::RelayConnected => "relay_connected",
            Self::RelayRefused => "relay_refused",
            Self::AuditRead => "audit_read",
            Self::Delegation => "delegation",
            Self::Hold => "legal_hold",
            Self::HoldReleased => "hold_released",
            Self::Deletion => "deletion",
        }
    }
}

/// One event to record. Never carries message bodies or tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub kind: AuditKind,
    /// Who: a user id, a relay id, or `cli` for a command run on the server.
    pub actor: Option<String>,
    pub role: Option<String>,
    pub device: Option<String>,
    /// The network address it came from.
    pub peer: Option<String>,
    pub room: Option<String>,
    pub detail: String,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, detail: impl Into<String>) -> Self {
        Self { kind, actor: None, role: None, device: None, peer: None, room: None, detail: detail.into() }
    }
    /// The audit row for a recorded revocation, made by `actor` (every backend writes
    /// this with the revocation, in the same transaction).
    pub fn revocation(r: &outpost_shared::Revocation, actor: &str) -> Self {
        let what = match &r.what {
            outpost_shared::Revoked::Token(jti) => format!("token {jti}"),
            outpost_shared::Revoked::User { user, issued_before } => {
                format!("tokens of {user} issued at or before {issued_before}")
            }
        };
        Self::new(AuditKind::Revocation, format!("revoked {what}: {}", r.reason)).actor(actor)
    }

    /// The audit row for a legal hold placed on `room` (`on`) or released, by `actor`
    /// (every backend writes this with the change, in the same transaction).
    pub fn hold(room: &str, on: bool, reason: &str, actor: &str) -> Self {
        let (kind, what) = if on {
            (AuditKind::Hold, format!("legal hold on room {room}: {reason}"))
        } else {
            (AuditKind::HoldReleased, format!("legal hold on room {room} released: {reason}"))
        };
        Self::new(kind, what).actor(actor).room(room)
    }

    /// The token holder as actor, with their role.
    pub fn by(self, claims: &outpost_shared::Claims) -> Self {
        self.actor(claims.sub.as_str()).role(claims.role.as_str())
    }
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }
    pub fn device(mut self, device: impl Into<String>) -> Self {
        self.device = Some(device.into());
        self
    }
    pub fn peer(mut self, peer: impl ToString) -> Self {
        self.peer = Some(peer.to_string());
        self
    }
    pub fn room(mut self, room: impl Into<String>) -> Self {
        self.room = Some(room.into());
        self
    }
}

/// A recorded event, as the audit API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub event: String,
    pub actor: Option<String>,
    pub role: Option<String>,
    pub device: Option<String>,
    pub peer: Option<String>,
    pub room: Option<String>,
    pub detail: String,
}
