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

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod echo;
pub mod hub;
pub mod lan_tls;
pub mod link;
pub mod mailbox;
pub mod media;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod session;
pub mod status;
pub mod submit;
pub mod supervisor;
pub mod systemd;
pub mod web;
pub mod ws;

pub use config::RelayConfig;
pub use server::{Listeners, RunError, run};
