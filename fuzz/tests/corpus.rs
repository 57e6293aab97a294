//! Replays every committed corpus file (and every saved crash, once fixed) through its
//! target's checks, so the normal test run keeps what fuzzing once found fixed.

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target_checks() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in outpost_fuzz::TARGETS {
        let mut n = 0;
        for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
            if !dir.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let data = std::fs::read(&path)?;
                let outcome = std::panic::catch_unwind(|| outpost_fuzz::check(target, &data));
                assert!(
                    matches!(outcome, Ok(Some(()))),
                    "{target}: {} fails its checks; reproduce with \
                     `cargo run -p outpost-fuzz --example replay -- {target} {}`",
                    path.display(),
                    path.display()
                );
                n += 1;
            }
        }
        assert!(n > 0, "{target} has no committed corpus");
    }
    Ok(())
}

/// The seeds must reach the decoders' success paths, or mutations would only ever
/// explore the first refusal.
#[test]
fn seeds_reach_the_success_paths() -> anyhow::Result<()> {
    use outpost_shared::uplink::{batch, control::Control};
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let read = |target: &str, name: &str| std::fs::read(corpus.join(target).join(format!("seed-{name}")));
    let verifier =
        outpost_shared::TokenVerifier::new(&outpost_fuzz::token::signer().public_key(), outpost_fuzz::token::ISSUER);
    let valid = String::from_utf8(read("token", "valid")?)?;
    assert!(verifier.verify(&valid, outpost_fuzz::token::NOW).is_ok());
    let other = String::from_utf8(read("token", "other-issuer")?)?;
    assert!(matches!(
        verifier.verify(&other, outpost_fuzz::token::NOW),
        Err(outpost_shared::TokenError::WrongIssuer { .. })
    ));
    for name in ["zstd-3", "dict-3", "plain-3"] {
        let (_, entries) = batch::decode(&read("uplink_batch", name)?, outpost_fuzz::uplink_batch::MAX_RAW)?;
        assert_eq!(entries.len(), 40, "{name}");
    }
    assert!(Control::decode(&read("uplink_control", "control-0")?).is_ok());
    let send = String::from_utf8(read("device_frame", "doc-01")?)?;
    assert!(outpost_shared::ClientFrame::decode(&send).is_ok());
    use outpost_shared::media::{self, ChunkHeader};
    let chunk = read("media_chunk", "chunk-1")?;
    let n = ChunkHeader::prefix_len([chunk[0], chunk[1], chunk[2]])?;
    assert_eq!(ChunkHeader::decode(&chunk[3..3 + n], 1 << 20, 16 << 20)?.len, 65_536);
    let body = outpost_shared::Body::from_json(&String::from_utf8(read("media_chunk", "body-0")?)?)?;
    assert!(media::body_ref(&body)?.is_some());
    assert_eq!(media::sniff(&read("media_chunk", "head-jpeg")?), Some("image/jpeg"));
    Ok(())
}
