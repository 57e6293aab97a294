//! The stable, machine-readable error codes of protocol v1.
//!
//! Clients switch on these strings, so they never change meaning. Each code carries a
//! default sentence telling the user what to do; servers may say something more specific.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    UnsupportedVersion,
    Unauthenticated,
    TokenExpired,
    Forbidden,
    TooLarge,
    RateLimited,
    StorageFull,
    UnknownRoom,
    Internal,
    /// A clinical event whose body does not match its kind's schema (`clinical`).
    InvalidEvent,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        Self::BadFrame,
        Self::UnsupportedVersion,
        Self::Unauthenticated,
        Self::TokenExpired,
        Self::Forbidden,
        Self::TooLarge,
        Self::RateLimited,
        Self::StorageFull,
        Self::UnknownRoom,
        Self::Internal,
        Self::InvalidEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Unauthenticated => "unauthenticated",
            Self::TokenExpired => "token_expired",
            Self::Forbidden => "forbidden",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::StorageFull => "storage_full",
            Self::UnknownRoom => "unknown_room",
            Self::Internal => "internal",
            Self::InvalidEvent => "invalid_event",
        }
    }

    /// A default sentence saying what went wrong and what to do about it.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::BadFrame => "the frame could not be understood; send a JSON object as described in protocol v1",
            Self::UnsupportedVersion => "this server speaks protocol version 1; send \"v\": 1",
            Self::Unauthenticated => "the token is missing or invalid; sign in again with a token issued by the cloud",
            Self::TokenExpired => "the token has expired; ask your supervisor for a new one",
            Self::Forbidden => "you are not allowed to do this in that room",
            Self::TooLarge => {
                "the frame or message body is over the size limit; send media in chunks and keep text short"
            }
            Self::RateLimited => "too many messages too quickly; wait a moment and send again",
            Self::StorageFull => "the hub's storage is full; only emergency messages are accepted until space is freed",
            Self::UnknownRoom => "no such room; check the room name",
            Self::Internal => "the server failed to handle this; the message was not lost, try again",
            Self::InvalidEvent => "the event does not match its form; correct the field named and send it again",
        }
    }

    /// WebSocket close code the server uses when this error ends the session, if it does.
    pub fn close_code(self) -> Option<u16> {
        match self {
            Self::Unauthenticated | Self::TokenExpired => Some(4001),
            _ => None,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
