//! `outpost-hotpath WORKLOAD N`: runs one of the hub's per-message code paths N times on
//! fixed inputs, for instruction counts under `valgrind --tool=callgrind`
//! (`scripts/callgrind.sh`). Instructions are repeatable where seconds on a shared VM are
//! not, so a change to a hot path can be judged by one number.
//!
//! Workloads (inputs from the test crate's village traffic generator, seed 7):
//! - `frame_decode`: `ClientFrame::decode` of a device's `send` frame (one per op)
//! - `frame_decode_reordered`: the same with its keys in another order (the general path)
//! - `message_encode`: `ServerFrame::Message` encoding for delivery (one per op)
//! - `batch_encode`: one uplink batch of 1,000 entries, zstd with the dictionary (per op)
//! - `batch_decode`: decoding that batch (per op)
//! - `token_verify`: Ed25519 (EdDSA JWT) verification of a device token (one per op)
//! - `body_ref`: finding the media reference in a message body (one per op)

use std::hint::black_box;

use outpost_shared::frames::{MessageBody, Positioned};
use outpost_shared::uplink::batch::{self, Entry, Lane};
use outpost_shared::uplink::dict;
use outpost_shared::{Body, Claims, ClientFrame, Cursor, Role, ServerFrame, TokenSigner, TokenVerifier};
use outpost_tests::corpus::Corpus;

const SEED: u64 = 7;

fn messages(n: usize) -> Vec<MessageBody> {
    Corpus::new(SEED)
        .take(n * 2)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Message(m) => m.into_stored().ok(),
            Entry::Receipt(_) => None,
        })
        .take(n)
        .collect()
}

/// The `msg` objects of `send` frames.
fn send_msgs(n: usize) -> Vec<serde_json::Value> {
    messages(n)
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id, "room": m.room, "kind": m.kind, "priority": m.priority,
                "body": serde_json::from_str::<serde_json::Value>(m.body.as_str()).unwrap_or_default(),
                "seq": m.seq})
        })
        .collect()
}

/// `send` frames as this codec, the web client and the load generator write them:
/// `"v"` and `"type"` first, so `ClientFrame::decode` reads the type from the prefix.
fn send_frames(n: usize) -> Vec<String> {
    send_msgs(n).iter().map(|m| format!(r#"{{"v":1,"type":"send","msg":{m}}}"#)).collect()
}

/// The same frames with their keys sorted (`"msg"` first), as other clients may write
/// them: the type is found by the general path, a parse of its own.
fn reordered_send_frames(n: usize) -> Vec<String> {
    send_msgs(n).into_iter().map(|m| serde_json::json!({"v": 1, "type": "send", "msg": m}).to_string()).collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(what), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok())) else {
        anyhow::bail!("usage: outpost-hotpath WORKLOAD N (see the module documentation)");
    };
    match what.as_str() {
        "frame_decode" | "frame_decode_reordered" => {
            let frames = if what == "frame_decode" { send_frames(256) } else { reordered_send_frames(256) };
            for i in 0..n {
                black_box(ClientFrame::decode(black_box(&frames[i % frames.len()])).ok());
            }
        }
        "message_encode" => {
            let msgs = messages(256);
            for i in 0..n {
                let m = msgs[i % msgs.len()].clone();
                black_box(ServerFrame::Message(Positioned { cursor: Cursor(i as u64), msg: m }).encode());
            }
        }
        "batch_encode" | "batch_decode" => {
            let entries = Corpus::new(SEED).take(1000);
            let d = dict::get(dict::CURRENT).map(|d| (dict::CURRENT, d));
            let encoded = batch::encode(1, Lane::Normal, Cursor(0), &entries, d)?;
            for _ in 0..n {
                if what == "batch_encode" {
                    black_box(batch::encode(1, Lane::Normal, Cursor(0), black_box(&entries), d)?);
                } else {
                    black_box(batch::decode(black_box(&encoded), 16 << 20)?);
                }
            }
        }
        "token_verify" => {
            let signer = TokenSigner::from_seed(&[0x5a; 32], "cloud-bench");
            let verifier = TokenVerifier::new(&signer.public_key(), "cloud-bench");
            let claims = Claims {
                sub: outpost_shared::UserId::new("amina")?,
                role: Role::Worker,
                rooms: vec![outpost_shared::RoomId::new("clinic")?],
                exp: 2_000_000_000,
                iat: 1_700_000_000,
                iss: "cloud-bench".into(),
                jti: "bench-1".into(),
                lin: None,
                dlg: None,
                org: None,
            };
            let token = signer.sign(&claims)?;
            for _ in 0..n {
                black_box(verifier.verify(black_box(&token), 1_800_000_000).ok());
            }
        }
        "body_ref" => {
            let with = Body::from_json(
                r#"{"text":"left forearm, day 3","media":{"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","type":"image/jpeg","name":"IMG_0412.jpg"}}"#,
            )?;
            let without = messages(256);
            for i in 0..n {
                if i % 64 == 0 {
                    black_box(outpost_shared::media::body_ref(black_box(&with)).ok());
                } else {
                    black_box(outpost_shared::media::body_ref(black_box(&without[i % 256].body)).ok());
                }
            }
        }
        other => anyhow::bail!("unknown workload {other:?}"),
    }
    Ok(())
}
