//! A health post as the workflow scenarios need it: a cloud and one hub enrolled with it,
//! both running, with two workers on the hub and a doctor at the cloud signed in to the
//! room `clinic`.

use crate::{Cloud, CloudProc, Device, Relay, RelayDir};

/// Hubs retry the cloud within 2 s, so a restarted hub's uplink is back at once.
pub const FAST_RETRY: &[(&str, &str)] = &[("OUTPOST_UPLINK__RETRY_MAX_SECS", "2")];

pub struct Clinic {
    pub tmp: tempfile::TempDir,
    pub cloud: Cloud,
    pub cloud_proc: CloudProc,
    pub relay_dir: RelayDir,
    pub relay: Relay,
    /// Tokens of amina and baraka (workers) and dr-neema (doctor), room `clinic`.
    pub amina_tok: String,
    pub baraka_tok: String,
    pub neema_tok: String,
    /// amina's and baraka's phones on the hub, dr-neema's laptop at the cloud.
    pub amina: Device,
    pub baraka: Device,
    pub neema: Device,
}

impl Clinic {
    pub async fn start() -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let cloud = Cloud::init(&tmp.path().join("cloud"))?;
        let cloud_proc = cloud.start("127.0.0.1:0").await?;
        let relay_dir = cloud.provision_relay_at("village-7", &tmp.path().join("relay"), &cloud_proc.quic_addr())?;
        let relay = relay_dir.start(FAST_RETRY).await?;
        let amina_tok = cloud.token("amina", "worker", &["clinic"], "1h")?;
        let baraka_tok = cloud.token("baraka", "worker", &["clinic"], "1h")?;
        let neema_tok = cloud.token("dr-neema", "doctor", &["clinic"], "1h")?;
        let mut amina = Device::connect(&relay.ws_url()).await?;
        amina.hello(&amina_tok, "amina-phone", None, None).await?;
        let mut baraka = Device::connect(&relay.ws_url()).await?;
        baraka.hello(&baraka_tok, "baraka-phone", None, None).await?;
        let mut neema = Device::connect(&cloud_proc.ws_url()).await?;
        neema.hello(&neema_tok, "neema-laptop", None, None).await?;
        Ok(Self { tmp, cloud, cloud_proc, relay_dir, relay, amina_tok, baraka_tok, neema_tok, amina, baraka, neema })
    }

    /// Kills the hub (-9) and starts it again on the same directory.
    pub async fn kill9_hub(&mut self) -> anyhow::Result<()> {
        self.relay.kill9().await?;
        self.relay = self.relay_dir.start(FAST_RETRY).await?;
        Ok(())
    }
}

/// Waits on `d` for the `message` frame of message `id` (others are passed over).
pub async fn message_of(d: &mut Device, id: &serde_json::Value) -> anyhow::Result<()> {
    while d.expect("message").await?["msg"]["id"] != *id {}
    Ok(())
}
