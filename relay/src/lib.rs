//! The Outpost hub.
//!
//! A village's phones talk to it over WebSocket (protocol v1); it keeps every message in
//! SQLite before acknowledging it and delivers it to the room at once. Modules:
//! [`config`] (layered settings), [`store`] (durable log, one writer thread), [`router`]
//! (live fan-out), [`session`] (one device connection), [`server`] (HTTP and lifecycle),
//! [`init`] (provisioning from an enrollment bundle).

pub mod api;
pub mod cli;
pub mod config;
pub mod echo;
pub mod hub;
pub mod init;
pub mod lan_tls;
pub mod link;
pub mod mailbox;
pub mod media;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod session;
pub mod status;
pub mod store;
pub mod systemd;
pub mod web;

pub use config::RelayConfig;
pub use server::{Listeners, RunError, run};
