//! The Outpost cloud: the hospital's server.
//!
//! This crate owns the cloud's identity (its token-signing key and the CA that enrolls
//! relays), its settings ([`config`]), token issue and relay enrollment. The QUIC ingest
//! and the doctors' WebSocket endpoint build on the same directory layout (see [`layout`]).

pub mod acme;
pub mod api;
pub mod config;
pub mod database;
pub mod enroll;
pub mod identity;
pub mod layout;
pub mod mule;
pub mod relays;
pub mod server;
pub mod tcp;
pub mod webhooks;

pub use config::CloudConfig;
pub use identity::{CloudIdentity, IdentityError};
