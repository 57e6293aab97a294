//! Typed identifiers shared by every Outpost component.
//!
//! Each id is a newtype so a room can never be passed where a user is expected. String
//! ids are validated at the edge (on decode) so the rest of the system can trust them:
//! bounded length keeps rows and frames small, and the restricted alphabet for rooms and
//! users keeps them safe to put in logs, file names and URLs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} may contain only letters, digits and . _ - : @ (got {value:?})")]
    BadChar { kind: &'static str, value: String },
}

fn check(kind: &'static str, value: &str, max: usize, strict_alphabet: bool) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    let ok = if strict_alphabet {
        value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@'))
    } else {
        !value.chars().any(char::is_control)
    };
    if !ok {
        return Err(IdError::BadChar { kind, value: value.chars().take(80).collect() });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $strict:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted id, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value, Self::MAX_LEN, $strict)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A device (one phone or browser profile), chosen by the client; ≤ 64 bytes.
    DeviceId, "device id", 64, false
);
string_id!(
    /// A person, as named in their token.
    UserId, "user id", 64, true
);
string_id!(
    /// A room (a conversation or a channel such as a clinic's case room).
    RoomId, "room id", 64, true
);
string_id!(
    /// What a message is (`chat`, `alert`, `report`, `event`, ...); free-form but short.
    MessageKind, "message kind", 32, true
);
string_id!(
    /// A hub, as enrolled by the cloud.
    RelayId, "relay id", 64, true
);

/// A message's client-made id (UUID, v7 recommended): its idempotency key everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub uuid::Uuid);

impl MessageId {
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(b))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A position in one server's log. Strictly increasing; `0` means "before everything".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Cursor(pub u64);

/// A device's own message counter, used to detect gaps in a sender's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Seq(pub u64);

/// Names one server database. A new database (for instance after an SD card was replaced)
/// gets a new epoch, so cursors from the old one are recognised as foreign.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub String);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Delivery priority. Ordered so that `Emergency` is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Bulk,
    Normal,
    Urgent,
    Emergency,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Bulk, Self::Normal, Self::Urgent, Self::Emergency];

    /// Stable small integer for storage (higher is more urgent).
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Bulk => 0,
            Self::Normal => 1,
            Self::Urgent => 2,
            Self::Emergency => 3,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bulk => "bulk",
            Self::Normal => "normal",
            Self::Urgent => "urgent",
            Self::Emergency => "emergency",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_validated() {
        assert!(RoomId::new("clinic-7").is_ok());
        assert_eq!(RoomId::new(""), Err(IdError::Empty { kind: "room id" }));
        assert!(matches!(RoomId::new("a b"), Err(IdError::BadChar { .. })));
        assert!(matches!(RoomId::new("x".repeat(65)), Err(IdError::TooLong { .. })));
        let err = serde_json::from_str::<RoomId>("\"bad room\"").map(|_| ());
        assert!(err.is_err());
    }

    #[test]
    fn device_ids_allow_free_text_but_no_controls() {
        assert!(DeviceId::new("Amina's phone").is_ok());
        assert!(DeviceId::new("tab\u{7}").is_err());
        assert!(DeviceId::new("d".repeat(64)).is_ok());
        assert!(DeviceId::new("d".repeat(65)).is_err());
    }

    #[test]
    fn priority_order_and_codes() {
        assert!(Priority::Emergency > Priority::Urgent);
        assert!(Priority::Urgent > Priority::Normal);
        assert!(Priority::Normal > Priority::Bulk);
        for p in Priority::ALL {
            assert_eq!(Priority::from_u8(p.as_u8()), Some(p));
        }
        assert_eq!(Priority::from_u8(4), None);
    }
}
