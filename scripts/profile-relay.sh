#!/usr/bin/env bash
# Where a running hub spends its instructions under the benchmark's durable-ingest load:
# runs `outpost-bench --phases ingest --quick` with the relay it starts wrapped in
# callgrind, then prints (scripts/profile-relay-report.py) each relay thread's
# instructions per stored message and the store writer's callees three levels deep.
#
#   scripts/profile-relay.sh [OUT_DIR]       # default OUT_DIR: target/profile-relay
#
# Callgrind runs the relay some 50x slower and one thread at a time, so the throughput
# the bench prints here means nothing; instructions per stored message are the figure to
# compare (they move with the code, the SQLite build and the message mix, hardly with
# the machine's load; group commits grow with the load, so per-commit costs spread a
# little differently from run to run). Builds the `profiling` profile (bench-fast code
# with symbols). Installs valgrind if missing (root). About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/profile-relay}")

if ! command -v valgrind >/dev/null 2>&1; then
  echo "installing valgrind" >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y valgrind >&2
fi
cargo build --profile profiling --bin outpost-relay -p outpost-relay >&2
cargo build --profile bench-fast --bin outpost-bench -p outpost-bench --bin outpost-cloud -p outpost-cloud >&2

rm -rf "$out" && mkdir -p "$out/bin"
# The harness starts `outpost-relay` from HARNESS_BIN_DIR. exec: the harness's SIGTERM
# reaches valgrind, which passes it on; the relay shuts down and callgrind writes its data.
cat >"$out/bin/outpost-relay" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=$out/callgrind.%p \\
  $PWD/target/profiling/outpost-relay "\$@"
EOF
chmod +x "$out/bin/outpost-relay"
# The cloud only issues the devices' tokens here; it runs as it is.
ln -s "$PWD/target/bench-fast/outpost-cloud" "$out/bin/outpost-cloud"

HARNESS_BIN_DIR="$out/bin" target/bench-fast/outpost-bench --phases ingest --quick --reps 1 --warmup-secs 5 --measure-secs 10 \
  >"$out/bench-report.md" 2>"$out/bench.log"

scripts/profile-relay-report.py "$out"
