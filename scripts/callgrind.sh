#!/usr/bin/env bash
# Instruction counts of the hub's per-message code paths under callgrind: repeatable
# figures (the same binary and inputs give the same count whatever else the machine
# does), unlike seconds on a shared VM.
#
#   scripts/callgrind.sh            # prints a Markdown table
#
# Each workload of `outpost-hotpath` (bench/src/bin/outpost-hotpath.rs) runs twice, with
# a small and a large repetition count; instructions per operation are the difference
# divided by the difference in operations, so start-up and input generation cancel out.
# Builds with the bench-fast profile (release code). Installs valgrind if missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  echo "installing valgrind" >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y valgrind >&2
fi
cargo build --profile bench-fast -p outpost-bench --bin outpost-hotpath >&2
bin=target/bench-fast/outpost-hotpath

group() { # 1234567 -> 1,234,567
  sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"
}

count() { # workload n -> instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 >/dev/null \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | tail -1
}

echo "| workload | one operation | instructions per operation | runs (operations) |"
echo "| --- | --- | ---: | --- |"
# name, small n, large n, what one operation is
while read -r name small large what; do
  a=$(count "$name" "$small")
  b=$(count "$name" "$large")
  per=$(( (b - a) / (large - small) ))
  printf '| `%s` | %s | %s | %s, %s |\n' "$name" "${what//_/ }" "$(group "$per")" "$small" "$large"
done <<'LIST'
frame_decode 1000 11000 decode_a_device's_send_frame
frame_decode_reordered 1000 11000 decode_it_with_its_keys_in_another_order
message_encode 1000 11000 encode_a_message_frame_for_delivery
body_ref 1000 11000 look_for_a_media_reference_in_a_body
token_verify 20 220 verify_an_Ed25519_device_token
batch_encode 2 12 encode_a_1,000-entry_uplink_batch_(zstd_+_dictionary)
batch_decode 5 55 decode_that_batch
LIST
