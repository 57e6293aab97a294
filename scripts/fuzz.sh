#!/usr/bin/env bash
# Coverage-guided fuzzing of the hostile-input decoders with libFuzzer, on stable Rust.
#
#   scripts/fuzz.sh [--merge] [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 600 s each, all targets (device_frame uplink_batch uplink_control token media_chunk).
# Builds the `outpost-fuzz` binaries with sanitizer-coverage instrumentation into
# target/fuzz (the normal build is untouched), runs each target for the fixed time on a
# working copy of fuzz/corpus/<target>, and exits non-zero if any target crashed,
# printing the artifact path and how to reproduce it. With --merge, inputs that add
# coverage are merged (minimised set, libFuzzer -merge=1) into the committed corpus.
# Runs under `nice -n 19`: the machine is shared. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

merge=0
if [[ "${1:-}" == "--merge" ]]; then merge=1; shift; fi
secs="${1:-600}"
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: $0 [--merge] [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 64; }
shift || true
all=(device_frame uplink_batch uplink_control token media_chunk)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "unknown target $t; one of: ${all[*]}" >&2; exit 64; }
done

# libfuzzer-sys compiles libFuzzer itself (C++).
if ! command -v c++ >/dev/null 2>&1; then
  echo "installing g++ (libFuzzer is C++)" >&2
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get -o DPkg::Lock::Timeout=600 update -qq
  $sudo_ apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends g++
fi

# What cargo-fuzz passes, minus the nightly-only -Zsanitizer: LLVM's SanitizerCoverage
# pass with inline 8-bit counters, a PC table and comparison tracing (libFuzzer's
# feedback), plus debug assertions and overflow checks so arithmetic bugs panic.
# --target makes RUSTFLAGS apply to the fuzzed code only, not to build scripts.
host="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="$PWD/target/fuzz"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# The release profile is tuned for the Pi (fat LTO, stripped); a fuzz build wants a
# quick rebuild and symbols in crash backtraces instead.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
nice -n 19 cargo build --release --locked --target "$host" -p outpost-fuzz --features libfuzzer --bins
bindir="$CARGO_TARGET_DIR/$host/release"

# Largest input per target: a device frame up to the hub's default frame limit, a
# batch large enough for a few dozen entries, a control body, a token.
max_len() {
  case "$1" in
    device_frame) echo 65536 ;;
    uplink_batch) echo 65536 ;;
    uplink_control) echo 16384 ;;
    token) echo 4096 ;;
  esac
}

work="$CARGO_TARGET_DIR/work"
mkdir -p "$work"
summary="$work/summary.txt"
printf '%-15s %6s %12s %8s %10s %8s %s\n' target secs execs exec/s corpus rss_mb result >"$summary"
failed=0
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  log="$work/$t.log"
  mkdir -p "$corpus" "$artifacts"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  echo "== $t: ${secs}s (log $log)"
  status=0
  nice -n 19 "$bindir/$t" "$corpus" fuzz/corpus/"$t" \
    -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 -close_fd_mask=1 >"$log" 2>&1 || status=$?
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  execs="$(stat number_of_executed_units)"
  rate="$(stat average_exec_per_sec)"
  rss="$(stat peak_rss_mb)"
  size="$(find "$corpus" -type f | wc -l)"
  if [[ $status -eq 0 ]]; then
    result=ok
  else
    failed=1
    artifact="$(grep -o "Test unit written to .*" "$log" | tail -1 | sed 's/Test unit written to //')"
    result="CRASH (exit $status) ${artifact:-see $log}"
    tail -40 "$log" >&2
    echo "reproduce: RUST_BACKTRACE=1 cargo run -p outpost-fuzz --example replay -- $t ${artifact:-ARTIFACT}" >&2
    echo "       or: $bindir/$t ${artifact:-ARTIFACT}" >&2
  fi
  printf '%-15s %6s %12s %8s %10s %8s %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$size" "${rss:-?}" "$result" | tee -a "$summary"
  if [[ $merge -eq 1 && $status -eq 0 ]]; then
    # Keep only inputs that add edge coverage over what is committed (a set cover, and
    # without hit counters: the committed corpus stays a few hundred small files; the
    # full working corpus stays in target/fuzz for the next local run).
    nice -n 19 "$bindir/$t" -set_cover_merge=1 -use_counters=0 -max_len="$(max_len "$t")" \
      fuzz/corpus/"$t" "$corpus" >>"$log" 2>&1
    echo "merged: fuzz/corpus/$t now $(find fuzz/corpus/"$t" -type f | wc -l) files"
  fi
done
echo
cat "$summary"
exit $failed
