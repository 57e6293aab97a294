//! Writes the seed corpus, `fuzz/corpus/<target>/seed-*`, from the real encoders:
//!
//! ```sh
//! cargo run -p outpost-fuzz --example gen_corpus
//! ```
//!
//! Messages come from the village traffic generator of the test crate (the same one the
//! batch dictionary is trained on), frames are the protocol document's examples plus
//! frames built from that traffic, tokens are signed with the fuzz key. Deterministic:
//! re-running it rewrites the same files. Inputs that fuzzing found are kept next to the
//! seeds under their libFuzzer (sha1) names; this does not touch them.

use std::path::Path;

use anyhow::Context as _;
use outpost_fuzz::token::{ISSUER, NOW, SEED, signer};
use outpost_shared::frames::{self, Body, OutgoingMsg, Positioned};
use outpost_shared::uplink::batch::{self, BatchHeader, Codec, Entry, Lane};
use outpost_shared::uplink::control::Control;
use outpost_shared::uplink::dict;
use outpost_shared::{Claims, ClientFrame, Cursor, RoomId, ServerFrame, TokenSigner, UserId};
use outpost_tests::corpus::{Corpus, as_device_json};

/// The examples of docs/protocol.md, as a device or server writes them.
const PROTOCOL_EXAMPLES: &[&str] = &[
    r#"{"v":1,"type":"hello","token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSJ9.eyJzdWIiOi...","device":"3f0c9a54-amina-phone","cursor":41,"epoch":"1743afab-9ad6-4ade-8c2a-4319b28122e3"}"#,
    r#"{"v":1,"type":"send","msg":{"id":"01a200ec-3028-72eb-8343-269233c5b130","room":"clinic","kind":"report","priority":"urgent","body":{"temp":39.5},"seq":7,"reply_to":"01a200ec-2dce-7906-8ea0-9098e969893b"}}"#,
    r#"{"v":1,"type":"ack","cursor":57}"#,
    r#"{"v":1,"type":"read","room":"clinic","id":"01a200ec-2dce-7906-8ea0-9098e969893b"}"#,
    r#"{"v":1,"type":"typing","room":"clinic","active":true}"#,
    r#"{"v":1,"type":"presence","status":"away"}"#,
    r#"{"v":1,"type":"history","room":"clinic","before":null,"limit":50}"#,
    r#"{"v":1,"type":"leave","room":"maternity"}"#,
    r#"{"v":1,"type":"join","room":"maternity"}"#,
    r#"{"type":"ping"}"#,
    r#"{"v":1,"type":"pong"}"#,
    r#"{"v":1,"type":"welcome","epoch":"1743afab-9ad6-4ade-8c2a-4319b28122e3","cursor":5,"user":"amina","rooms":["clinic"],"role":"worker"}"#,
    r#"{"v":1,"type":"stored","id":"01a200ec-2dce-7906-8ea0-9098e969893b","cursor":1,"duplicate":true}"#,
    r#"{"v":1,"type":"message","cursor":2,"msg":{"id":"01a200ec-3028-72eb-8343-269233c5b130","room":"clinic","kind":"report","priority":"urgent","body":{"temp":39.5},"seq":1,"reply_to":"01a200ec-2dce-7906-8ea0-9098e969893b","from":"baraka","device":"baraka-phone","hlc":117657554685329408,"at":1795311808553}}"#,
    r#"{"ahead":true,"v":1,"type":"message","cursor":2,"msg":{"id":"01a200ec-3028-72eb-8343-269233c5b130","room":"clinic","kind":"chat","priority":"normal","body":"hi","seq":1,"from":"baraka","device":"baraka-phone","hlc":1,"at":1}}"#,
    r#"{"v":1,"type":"receipt","id":"01a200ec-2dce-7906-8ea0-9098e969893b","state":"delivered","by":"baraka","at":1795311808854,"room":"clinic","cursor":3}"#,
    r#"{"v":1,"type":"resync","epoch":"1743afab-9ad6-4ade-8c2a-4319b28122e3","cursor":5}"#,
    r#"{"v":1,"type":"error","code":"forbidden","message":"you are not a member of room maternity","id":"01a200ec-3ac1-757e-bee6-3b14d0407c7a"}"#,
    r#"{"v":1,"type":"typing","room":"clinic","user":"amina","active":false}"#,
    r#"{"v":1,"type":"presence","user":"amina","status":"offline","last_seen":1795311808553}"#,
    r#"{"v":2,"type":"ping"}"#,
];

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut traffic = Corpus::new(2026);
    write(&root.join("device_frame"), device_frames(&mut traffic)?)?;
    write(&root.join("uplink_batch"), batches(&mut traffic)?)?;
    write(&root.join("uplink_control"), controls())?;
    write(&root.join("token"), tokens()?)?;
    write(&root.join("media_chunk"), media_frames())?;
    Ok(())
}

/// Chunk frames and answers as the bulk lane writes them, media bodies, and file heads.
fn media_frames() -> Vec<(String, Vec<u8>)> {
    use outpost_shared::media::{BlobId, CHUNK_VERSION, ChunkHeader, Have};
    let blob = BlobId([7; 32]);
    let mut out = Vec::new();
    for (i, (offset, len)) in [(0u64, 0u32), (0, 65_536), (4_980_736, 19_264)].into_iter().enumerate() {
        let mut f = ChunkHeader { v: CHUNK_VERSION, blob, size: 5_000_000, offset, len }.encode();
        f.extend(std::iter::repeat_n(0xAB, len.min(64) as usize));
        out.push((format!("chunk-{i}"), f));
    }
    for (i, h) in [
        Have { offset: 65_536, complete: false, refused: None },
        Have { offset: 5_000_000, complete: true, refused: None },
        Have { offset: 0, complete: false, refused: Some("storage is full".into()) },
    ]
    .into_iter()
    .enumerate()
    {
        out.push((format!("have-{i}"), h.encode()[2..].to_vec()));
    }
    let sha = blob.hex();
    out.push((
        "body-0".into(),
        format!(r#"{{"text":"arm","media":{{"sha256":"{sha}","type":"image/jpeg","name":"a.jpg"}}}}"#).into_bytes(),
    ));
    out.push(("body-1".into(), format!(r#"{{"media":{{"sha256":"{sha}","preview":{{"data":"x"}}}}}}"#).into_bytes()));
    out.push(("head-jpeg".into(), vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1]));
    out.push(("head-webm".into(), vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 1]));
    out.push(("head-heic".into(), b"\0\0\0\x18ftypheic\0\0\0\0mif1".to_vec()));
    out
}

fn write(dir: &Path, seeds: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let n = seeds.len();
    for (name, data) in seeds {
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, data).with_context(|| path.display().to_string())?;
    }
    println!("{}: {n} seeds", dir.display());
    Ok(())
}

fn device_frames(traffic: &mut Corpus) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out: Vec<(String, Vec<u8>)> =
        PROTOCOL_EXAMPLES.iter().enumerate().map(|(i, s)| (format!("doc-{i:02}"), s.as_bytes().to_vec())).collect();
    let token = signer().sign(&claims("amina", &["clinic"], NOW + 86_400))?;
    out.push((
        "hello-signed".into(),
        format!(r#"{{"v":1,"type":"hello","token":"{token}","device":"amina-phone-01","cursor":3,"epoch":"e-1"}}"#)
            .into_bytes(),
    ));
    for (i, entry) in traffic.take(12).into_iter().enumerate() {
        // What the server shows for the entry, and (for messages) the `send` that made it.
        let shown = as_device_json(&entry);
        let server = ServerFrame::decode(&shown).map(|f| f.encode()).unwrap_or(shown);
        out.push((format!("server-{i:02}"), server.into_bytes()));
        if let Entry::Message(m) = entry {
            let stored = m.into_stored()?;
            let send = ClientFrame::Send(frames::Send {
                msg: OutgoingMsg {
                    id: stored.id,
                    room: stored.room.clone(),
                    kind: stored.kind.clone(),
                    priority: stored.priority,
                    body: Body::from_json(stored.body.as_str())?,
                    seq: stored.seq,
                    reply_to: Some(stored.id),
                },
            });
            out.push((format!("send-{i:02}"), send.encode().into_bytes()));
            let page = ServerFrame::History(frames::HistoryPage::local(
                stored.room.clone(),
                vec![Positioned { cursor: Cursor(i as u64 + 1), msg: stored }],
                true,
            ));
            out.push((format!("history-{i:02}"), page.encode().into_bytes()));
        }
    }
    Ok(out)
}

fn batches(traffic: &mut Corpus) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let current = dict::get(dict::CURRENT).map(|d| (dict::CURRENT, d));
    for (i, n) in [1usize, 3, 10, 40].into_iter().enumerate() {
        let entries = traffic.take(n);
        let hwm = Cursor(entries[0].cursor().0 - 1);
        out.push((format!("zstd-{i}"), batch::encode(i as u64, Lane::Normal, hwm, &entries, None)?));
        out.push((format!("dict-{i}"), batch::encode(i as u64 + 10, Lane::Emergency, hwm, &entries, current)?));
        out.push((format!("plain-{i}"), plain(i as u64 + 20, hwm, &entries)?));
    }
    Ok(out)
}

/// A batch with `Codec::Plain` (never sent by our encoder, but accepted by the decoder):
/// the fuzzer mutates the postcard entries directly instead of a zstd frame.
fn plain(batch_no: u64, hwm: Cursor, entries: &[Entry]) -> anyhow::Result<Vec<u8>> {
    let raw = postcard::to_stdvec(entries)?;
    let header = BatchHeader {
        v: batch::BATCH_VERSION,
        batch: batch_no,
        lane: Lane::Normal,
        first: entries.first().map_or(Cursor(0), Entry::cursor),
        last: entries.last().map_or(Cursor(0), Entry::cursor),
        count: u32::try_from(entries.len())?,
        codec: Codec::Plain,
        raw_len: u32::try_from(raw.len())?,
        hwm,
    };
    let h = postcard::to_stdvec(&header)?;
    Ok([u32::try_from(h.len())?.to_be_bytes().to_vec(), h, raw].concat())
}

fn controls() -> Vec<(String, Vec<u8>)> {
    let rooms = |names: &[&str]| names.iter().filter_map(|r| RoomId::new(*r).ok()).collect::<Vec<_>>();
    let frames = [
        Control::Hello {
            v: 1,
            relay: "village-7".into(),
            epoch: "0190c3f2-aaaa-7bbb-8ccc-0123456789ab".into(),
            rooms: rooms(&["clinic", "maternity", "village-north"]),
            dicts: dict::known(),
        },
        Control::Welcome {
            cloud: "cloud-1".into(),
            epoch: "0190c3f2-dddd-7eee-8fff-0123456789ab".into(),
            hwm: Cursor(4242),
        },
        Control::Ack { batch: 17 },
        Control::Rooms { rooms: rooms(&["pharmacy", "vaccination"]) },
        Control::Refused { code: "unknown_relay".into(), message: "this cloud has not enrolled village-9".into() },
    ];
    // The body, as `read_control` passes it to `decode` after the length prefix.
    frames.iter().enumerate().map(|(i, c)| (format!("control-{i}"), c.encode()[4..].to_vec())).collect()
}

fn claims(user: &str, rooms: &[&str], exp: u64) -> Claims {
    Claims {
        sub: UserId::new(user).unwrap_or_else(|e| panic!("{e}")),
        role: outpost_shared::Role::Worker,
        rooms: rooms.iter().filter_map(|r| RoomId::new(*r).ok()).collect(),
        exp,
        iat: NOW - 3_600,
        iss: ISSUER.into(),
        jti: "0190c3f2-1111-7222-8333-0123456789ab".into(),
        lin: None,
        dlg: None,
        org: None,
    }
}

fn tokens() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let ours = signer();
    let mut doctor = claims("dr-neema", &["clinic", "maternity", "village-north", "village-south"], NOW + 30 * 86_400);
    doctor.role = outpost_shared::Role::Doctor;
    let mut foreign = claims("amina", &["clinic"], NOW + 86_400);
    foreign.iss = "cloud-other".into();
    let other_issuer = TokenSigner::from_seed(&SEED, "cloud-other");
    let other_key = TokenSigner::from_seed(&[0x11; 32], ISSUER);
    let valid = ours.sign(&claims("amina", &["clinic"], NOW + 86_400))?;
    let mut out = vec![
        ("valid".to_owned(), valid.clone()),
        ("valid-doctor".to_owned(), ours.sign(&doctor)?),
        ("expired".to_owned(), ours.sign(&claims("amina", &["clinic"], NOW - 1))?),
        ("expires-now".to_owned(), ours.sign(&claims("amina", &["clinic"], NOW))?),
        ("other-issuer".to_owned(), other_issuer.sign(&foreign)?),
        ("other-key".to_owned(), other_key.sign(&claims("amina", &["clinic"], NOW + 86_400))?),
        ("no-rooms".to_owned(), ours.sign(&claims("juma", &[], NOW + 86_400))?),
    ];
    // Unsigned variants of the valid token: `alg: none` and HS256 headers.
    let mut parts = valid.split('.');
    let payload = parts.nth(1).unwrap_or_default();
    out.push(("alg-none".into(), format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")));
    out.push(("alg-hs256".into(), format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{payload}.AAAA")));
    Ok(out.into_iter().map(|(n, t)| (n, t.into_bytes())).collect())
}
