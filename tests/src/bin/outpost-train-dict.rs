//! Regenerates the batch compression dictionary from the corpus generator.
//!
//! `outpost-train-dict OUT [SAMPLES]` writes a zstd dictionary trained on SAMPLES
//! (default 4000) batch payloads of 1 to 200 entries, as the uplink encodes them. Run by
//! `scripts/train-dict.sh`; a changed dictionary must get a new id (see
//! `shared/src/uplink/dict.rs`).

use anyhow::Context as _;
use outpost_tests::corpus::{Corpus, Rng};

/// Dictionary size: large enough for the vocabulary of a village, small enough to ship
/// in every binary.
const DICT_BYTES: usize = 32 * 1024;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().context("usage: outpost-train-dict OUT [SAMPLES]")?;
    let samples: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4000);
    let mut corpus = Corpus::new(0x0007_9057);
    let mut sizes = Rng::new(7);
    let mut data = Vec::new();
    for _ in 0..samples {
        let n = 1 + sizes.below(200) as usize;
        data.push(postcard::to_stdvec(&corpus.take(n))?);
    }
    let dict = zstd::dict::from_samples(&data, DICT_BYTES)?;
    std::fs::write(&out, &dict)?;
    println!("wrote {} bytes of dictionary to {out} from {samples} samples", dict.len());
    Ok(())
}
