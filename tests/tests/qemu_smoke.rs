//! The hub as it runs on a Pi: the aarch64 build of `outpost-relay`, emulated by
//! qemu-user, is provisioned from a bundle written by the host's `outpost-cloud`, serves a
//! phone, stores and acknowledges its message, stops on SIGTERM with status 0, and after a
//! restart replays the message to another phone.
//!
//! `scripts/test.sh` cross-builds that binary (`scripts/cross-build.sh --profile dev
//! --target aarch64 --relay-only`) and sets `QEMU_RELAY_BIN` to it and `QEMU_RELAY_WRAPPER`
//! to the qemu command line (split on spaces). If the cross toolchain or qemu could not be
//! installed it sets `QEMU_SMOKE_SKIP` to the reason instead, and this test prints that it
//! was skipped and why. Run outside the script (plain `cargo test`), the test uses the
//! default cross-build output if it exists, and otherwise says how to build it; under CI
//! (`CI` set) a missing binary is a failure, and so is a skip unless `ALLOW_QEMU_SKIP=1`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use outpost_tests::client::chat;
use outpost_tests::{Cloud, Device, RelayCmd, free_udp_addr};

const DEFAULT_BIN: &str = "target/cross/aarch64-unknown-linux-gnu/debug/outpost-relay";
const DEFAULT_WRAPPER: &str = "qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib";

/// The emulated relay, or None (after saying so) when the test must be skipped.
fn emulated_relay() -> anyhow::Result<Option<RelayCmd>> {
    if let Ok(reason) = std::env::var("QEMU_SMOKE_SKIP") {
        // Under CI a skip is a failure unless the run says it accepts one.
        if std::env::var_os("CI").is_some() && std::env::var("ALLOW_QEMU_SKIP").as_deref() != Ok("1") {
            bail!(
                "the qemu smoke test cannot run ({reason}); under CI that is a failure (ALLOW_QEMU_SKIP=1 accepts it)"
            );
        }
        let msg = format!("SKIPPED: qemu smoke test not run: {reason}");
        println!("{msg}");
        eprintln!("{msg}");
        return Ok(None);
    }
    let wrapper: Vec<String> = std::env::var("QEMU_RELAY_WRAPPER")
        .unwrap_or_else(|_| DEFAULT_WRAPPER.to_owned())
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let bin = match std::env::var_os("QEMU_RELAY_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            // Tests run in tests/; the workspace root is one up.
            let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(DEFAULT_BIN);
            if !default.exists() {
                let how = "build it with `scripts/cross-build.sh --profile dev --target aarch64 --relay-only` \
                           or run scripts/test.sh";
                if std::env::var_os("CI").is_some() {
                    bail!("QEMU_RELAY_BIN is not set and {} does not exist: {how}", default.display());
                }
                let msg = format!("SKIPPED: qemu smoke test not run: no aarch64 relay at {}: {how}", default.display());
                println!("{msg}");
                eprintln!("{msg}");
                return Ok(None);
            }
            default
        }
    };
    if !bin.exists() {
        bail!("QEMU_RELAY_BIN={} does not exist", bin.display());
    }
    // Make sure this really is the ARM build: an x86-64 binary would pass without qemu
    // proving anything. ELF e_machine (bytes 18..20, little endian) is 183 for AArch64.
    let head = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    if head.len() < 20 || &head[..4] != b"\x7fELF" || u16::from_le_bytes([head[18], head[19]]) != 183 {
        bail!("{} is not an AArch64 ELF binary", bin.display());
    }
    Ok(Some(RelayCmd::wrapped(&wrapper, &bin)))
}

#[tokio::test]
async fn aarch64_relay_under_qemu_stores_stops_cleanly_and_keeps_the_message() -> anyhow::Result<()> {
    let Some(relay_cmd) = emulated_relay()? else { return Ok(()) };
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    // No cloud listens there: the hub must serve its village without an uplink.
    let dir = cloud.provision_relay_cmd(&relay_cmd, "pi-1", &tmp.path().join("relay"), &free_udp_addr()?)?;
    assert!(dir.db().exists(), "the emulated init created the database");

    let mut relay = dir.start_cmd(&relay_cmd, "127.0.0.1:0", &[]).await?;
    let mut a = Device::connect(&relay.ws_url()).await?;
    a.hello(&cloud.token("amina", "worker", &["clinic"], "1h")?, "amina-phone", None, None).await?;
    let stored = a.send_stored(chat("clinic", "fever in the north houses")).await?;
    assert_eq!(stored["type"], "stored");

    assert_eq!(relay.terminate().await?, Some(0), "SIGTERM shuts the emulated hub down cleanly; log:\n{}", dir.log());
    assert_eq!(a.expect_close().await?, Some(1001));
    assert!(dir.log().contains("hub stopped"), "an orderly stop is logged:\n{}", dir.log());

    let mut relay = dir.start_cmd(&relay_cmd, "127.0.0.1:0", &[]).await?;
    let mut b = Device::connect(&relay.ws_url()).await?;
    b.hello(&cloud.token("baraka", "worker", &["clinic"], "1h")?, "baraka-phone", None, None).await?;
    let got = b.settle("message").await?;
    assert_eq!(got.len(), 1, "the message survived the restart: {got:?}");
    assert_eq!(got[0]["cursor"], stored["cursor"]);
    assert_eq!(got[0]["msg"]["body"]["text"], "fever in the north houses");
    assert_eq!(relay.terminate().await?, Some(0));
    Ok(())
}
