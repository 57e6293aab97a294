//! End-to-end harness: real `outpost-cloud` and `outpost-relay` processes, temp dirs,
//! real keys and a scripted device client over real WebSockets.
//!
//! Binaries are found next to the test executable's target directory (`target/debug`)
//! unless `HARNESS_BIN_DIR` names another folder; `cargo build --bins` must have run
//! first (the project's test script does it). Every wait is on an event (a line on a
//! pipe, a frame on a socket) with a timeout that only bounds a failing test.

pub mod acme;
pub mod client;
pub mod clinic;
pub mod corpus;
pub mod http;
pub mod linkemu;
pub mod media;
pub mod proc;
pub mod proxy;
pub mod tls;

pub use client::{Device, Frame};
pub use proc::{Cloud, CloudProc, Relay, RelayCmd, RelayDir, bin, command, free_udp_addr};

use std::time::Duration;

/// The longest any single expected event may take before a test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A new UUIDv7 message id, as clients make them.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A ready-made world: one cloud identity, one provisioned relay running on a free port.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub cloud: Cloud,
    pub relay_dir: RelayDir,
    pub relay: Relay,
}

impl World {
    /// Creates a cloud, enrolls relay `r1`, provisions it and starts it.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Same, with `OUTPOST_...` environment settings for the relay.
    pub async fn start_with(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let cloud = Cloud::init(&tmp.path().join("cloud"))?;
        let relay_dir = cloud.provision_relay("r1", &tmp.path().join("relay"))?;
        let relay = relay_dir.start(env).await?;
        Ok(Self { tmp, cloud, relay_dir, relay })
    }

    /// A token for `user` with `role` in `rooms`.
    pub fn token(&self, user: &str, role: &str, rooms: &[&str]) -> String {
        self.cloud.token(user, role, rooms, "1h").unwrap_or_else(|e| panic!("token: {e}"))
    }

    /// Connects `device` as `user` (worker role) in `rooms` and completes the handshake.
    pub async fn device(&self, user: &str, device: &str, rooms: &[&str]) -> Device {
        let tok = self.token(user, "worker", rooms);
        let mut d = Device::connect(&self.relay.ws_url()).await.unwrap_or_else(|e| panic!("connect: {e}"));
        d.hello(&tok, device, None, None).await.unwrap_or_else(|e| panic!("hello: {e}"));
        d
    }

    /// A device of `user` that reads the whole log (cursor 0: an exact resume from the
    /// start), as an auditor counting every message does; `device` sends nothing.
    pub async fn reader(&self, user: &str, device: &str, rooms: &[&str]) -> Device {
        let tok = self.token(user, "worker", rooms);
        let mut d = Device::connect(&self.relay.ws_url()).await.unwrap_or_else(|e| panic!("connect: {e}"));
        d.hello(&tok, device, Some(0), None).await.unwrap_or_else(|e| panic!("hello: {e}"));
        d
    }

    /// Restarts the relay process after it stopped or was killed.
    pub async fn restart_relay(&mut self) -> anyhow::Result<()> {
        self.relay = self.relay_dir.start(&[]).await?;
        Ok(())
    }
}
