#!/usr/bin/env bash
# Runs every test of the workspace: unit and property tests beside the code, and the
# end-to-end scenarios in tests/ that start real outpost-relay and outpost-cloud processes.
# Installs what the tests need on its own; assumes only a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# The scenarios start the real binaries, so build them first (debug profile; see
# tests/src/proc.rs for how they are found).
cargo build --workspace --bins --locked

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
