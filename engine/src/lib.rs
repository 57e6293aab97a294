//! The Outpost engine: what the hub and the cloud both run.
//!
//! Devices talk to it over WebSocket (protocol v1); it keeps every message in storage
//! before acknowledging it and delivers it to the room at once; peers (a hub and its
//! cloud) exchange their logs over the QUIC link. Modules: [`config`] (layered
//! settings), [`router`] (live fan-out), [`session`] (one device connection), [`server`]
//! (HTTP and lifecycle), [`link`] (the hub ↔ cloud link), [`media`] (blobs), [`status`].
//! Storage is `outpost-storage`'s types, kept by the SQLite backend
//! (`outpost-store-sqlite`). The applications are `outpost-relay` (the hub: provisioning
//! and its command line) and `outpost-cloud`.

// Only what the applications use is public; the rest of the engine is private to it, so
// a change inside it cannot break them unnoticed.
#![deny(unreachable_pub)]

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
mod echo;
pub mod hub;
pub mod lan_cert;
pub mod lan_tls;
pub mod link;
mod mailbox;
pub mod media;
pub mod mule;
pub mod private;
pub mod ratelimit;
pub mod renewal;
pub mod retention;
pub mod router;
pub mod server;
mod session;
mod status;
pub mod submit;
mod supervisor;
mod systemd;
mod web;
mod ws;

pub use config::RelayConfig;
pub use server::{Listeners, RunError, run};
