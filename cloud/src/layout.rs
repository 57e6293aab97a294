//! Where the cloud keeps its files inside its `--dir`.
//!
//! ```text
//! DIR/cloud.toml          cloud id and settings (see `config`)
//! DIR/keys/token.key      Ed25519 token-signing seed (base64, mode 0600)
//! DIR/keys/token.pub      its public key (base64), also in every relay bundle
//! DIR/keys/relay-ca.key   the relay CA's private key (PEM, mode 0600)
//! DIR/keys/relay-ca.crt   the relay CA certificate (PEM)
//! DIR/keys/server.key     the cloud's QUIC server key (PEM, mode 0600)
//! DIR/keys/server.crt     the cloud's QUIC server certificate, issued by the relay CA
//! DIR/relays/RELAY.crt    hubs' certificates, for their USB stick answers
//! DIR/data/               the cloud's databases
//! DIR/data/cloud.db       the cloud's database (messages, audit log, media metadata)
//! DIR/data/media/         photos, voice notes and documents (on SQLite; on PostgreSQL
//!                         they are in the database)
//! ```

use std::path::{Path, PathBuf};

/// The DNS name in the cloud's server certificate; relays check it.
pub const SERVER_NAME: &str = "outpost-cloud";

#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self { dir: dir.as_ref().to_path_buf() }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("cloud.toml")
    }
    pub fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn database(&self) -> PathBuf {
        self.data().join("cloud.db")
    }
    /// The SQLite cloud's media files (`blobs/`, `partial/`).
    pub fn media(&self) -> PathBuf {
        self.data().join("media")
    }
    pub fn token_key(&self) -> PathBuf {
        self.keys().join("token.key")
    }
    pub fn token_pub(&self) -> PathBuf {
        self.keys().join("token.pub")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.keys().join("relay-ca.key")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.keys().join("relay-ca.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.keys().join("server.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.keys().join("server.crt")
    }
    /// Hubs' certificates (`RELAY.crt`, kept at enrollment and from their sticks): what
    /// the cloud's stick answers are encrypted to.
    pub fn relays(&self) -> PathBuf {
        self.dir.join("relays")
    }
}
