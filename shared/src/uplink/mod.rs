//! The hub ↔ cloud link, as pure code.
//!
//! [`batch`] is the binary batch format (a header and a zstd frame of postcard-encoded
//! entries, with a trained dictionary); [`control`] the frames of the control stream;
//! [`flow`] the sending side's state machine (lanes, in-flight window sized from the
//! measured bandwidth-delay product, high-water mark); [`backoff`] the reconnect policy;
//! [`failover`] which of a cloud's several addresses the hub dials, and when.
//! The link is symmetric: the hub sends its village's traffic up, the cloud sends replies
//! down, with the same formats. A thin quinn shell in the relay crate drives all of it.

pub mod backoff;
pub mod batch;
pub mod control;
pub mod dict;
pub mod failover;
pub mod flow;
pub mod handshake;

/// ALPN protocol id of the link.
pub const ALPN: &[u8] = b"outpost/1";
