//! A hub that sends the cloud a revocation list: only a cloud revokes tokens (a hub's
//! list would let one village lock out another's workers and doctors), so the cloud cuts
//! the hub off and applies nothing (docs/security.md, "Revocation").
//!
//! The hub here is this test, not `outpost-relay` (which never sends one): it holds a real
//! enrolled relay's identity, dials the real cloud over QUIC with mutual TLS, says `Hello`
//! as a hub does, and then sends `Revocations`.

use std::net::SocketAddr;

use anyhow::Context as _;
use outpost_engine::link::tls::{SERVER_NAME, client_config};
use outpost_engine::link::{read_control, write_control};
use outpost_shared::revocation::{Revocation, Revoked};
use outpost_shared::uplink::control::Control;
use outpost_shared::uplink::handshake::{Dialer, HelloParams};
use outpost_tests::client::chat;
use outpost_tests::{Cloud, EVENT_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_sends_revocations_is_cut_off_and_nothing_is_revoked() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let cloud = Cloud::init(&tmp.path().join("cloud"))?;
    let proc = cloud.start("127.0.0.1:0").await?;
    let relay = cloud.provision_relay_at("village-9", &tmp.path().join("relay"), &proc.quic_addr())?;
    // A doctor is signed in at the cloud before the hub says anything.
    let mut dr = cloud.doctor(&proc.ws_url(), &["clinic"]).await?;

    let read = |f: &str| std::fs::read_to_string(relay.dir.join("identity").join(f)).context(f.to_owned());
    let client = client_config(&read("ca.crt")?, &read("relay.crt")?, &read("relay.key")?)?;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(client);
    let addr: SocketAddr = proc.quic_addr().parse()?;
    let conn = ep.connect(addr, SERVER_NAME)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let params = HelloParams {
        relay: "village-9".into(),
        epoch: "an-epoch-of-its-own".into(),
        rooms: vec![outpost_shared::RoomId::new("clinic")?],
        dicts: Vec::new(),
    };
    let mut dialer = Dialer::new(params, std::time::Duration::ZERO, EVENT_TIMEOUT);
    let hello = dialer.poll_transmit().context("the dialer has a Hello to send")?;
    write_control(&mut send, &hello).await?;
    // Positive control: the cloud takes this hub as the enrolled relay it is.
    let welcomed = dialer.handle_control(read_control(&mut recv).await?)?;
    assert!(!welcomed.cloud.is_empty(), "the cloud welcomed the hub");

    let everyone = Revocation {
        what: Revoked::User { user: "dr-neema".into(), issued_before: u64::MAX / 2 },
        reason: "a village deciding for the hospital".into(),
        at: 1_700_000_000_000,
    };
    write_control(&mut send, &Control::Revocations { entries: vec![everyone] }).await?;
    // The cloud ends the connection (a hub that applied nothing would still be served).
    tokio::time::timeout(EVENT_TIMEOUT, conn.closed())
        .await
        .context("the cloud kept a hub that sent revocations connected")?;
    // The reason is in the cloud's log (written as the link ends, so looked for a while).
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !cloud.log().contains("a hub may not send revocations") {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the reason is not logged: {}", cloud.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Nothing was revoked: the list in the cloud's database is empty, the doctor's open
    // session goes on, and a new sign-in with the same token works.
    let rows: i64 =
        rusqlite::Connection::open(cloud.db())?.query_row("SELECT count(*) FROM revocations", [], |r| r.get(0))?;
    assert_eq!(rows, 0, "no revocation was stored");
    dr.send_stored(chat("clinic", "still here")).await?;
    let mut again = cloud.doctor(&proc.ws_url(), &["clinic"]).await?;
    again.send_stored(chat("clinic", "and signing in again")).await?;
    ep.close(0u32.into(), b"done");
    Ok(())
}
