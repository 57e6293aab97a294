#!/usr/bin/env bash
# Regenerates shared/dict/outpost-N.zdict from the corpus generator (tests/src/corpus.rs).
# A dictionary id, once shipped, must never change content: to ship a new dictionary,
# write it under a new id and bump `dict::CURRENT` in shared/src/uplink/dict.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
ID="${1:-1}"
cargo run -q -p outpost-tests --bin outpost-train-dict -- "shared/dict/outpost-$ID.zdict" "${SAMPLES:-4000}"
