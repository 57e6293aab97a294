#!/usr/bin/env bash
# WebSocket conformance: the Autobahn test cases 1-10 (run by kosoku, from PyPI) against the
# hub's test-only /echo route, which is served by the same stack with the same WebSocket
# settings and limits as /ws (engine/src/echo.rs). See docs/conformance.md.
#
#   tests/conformance/run.sh     # after `cargo build --workspace --bins`; builds nothing
#
# Provisions a throwaway hub as the end-to-end tests do (`outpost-cloud init`,
# `enroll-relay`, `outpost-relay init --bundle`), starts it on a free loopback port with
# OUTPOST_SERVER__CONFORMANCE_ECHO=true, runs the cases and fails unless every case is OK or
# accepted, with its reason, in tests/conformance/expected.toml. kosoku is installed into a
# venv under the target directory (python3-venv from apt when missing). The report
# (index.html, per-case JSON, summary.json) and the hub's log go to
# $CARGO_TARGET_DIR/conformance (default target/conformance).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
target="${CARGO_TARGET_DIR:-target}"
[[ $target = /* ]] || target="$root/$target"
bin="${HARNESS_BIN_DIR:-$target/debug}"
out="$target/conformance"
KOSOKU_VERSION=0.1.0

for b in outpost-relay outpost-cloud; do
  if [[ ! -x "$bin/$b" ]]; then
    echo "conformance: $bin/$b is missing: run \`cargo build --workspace --bins\` first" >&2
    exit 2
  fi
done

# kosoku in its own venv, kept between runs (reinstalled when the version changes).
venv="$out/venv"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kosoku') != '$KOSOKU_VERSION')" 2>/dev/null; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update
    $sudo apt-get -o DPkg::Lock::Timeout=600 install -y python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

tmp="$(mktemp -d)"
relay_pid=""
cleanup() {
  if [[ -n $relay_pid ]]; then
    kill -TERM "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$bin/outpost-cloud" init --dir "$tmp/cloud" >/dev/null
"$bin/outpost-cloud" enroll-relay --dir "$tmp/cloud" --relay conformance \
  --cloud-addr 127.0.0.1:4433 --out "$tmp/relay.bundle.json" >/dev/null
"$bin/outpost-relay" init --dir "$tmp/relay" --bundle "$tmp/relay.bundle.json" >/dev/null

rm -rf "$out/report"
mkdir -p "$out/report"
mkfifo "$tmp/stdout"
OUTPOST_SERVER__CONFORMANCE_ECHO=true RUST_LOG="${RUST_LOG:-info}" \
  "$bin/outpost-relay" run --dir "$tmp/relay" --ws 127.0.0.1:0 >"$tmp/stdout" 2>"$out/relay.log" &
relay_pid=$!
# The hub's first stdout line says where it listens; keep the pipe open (fd 3) until exit.
exec 3<"$tmp/stdout"
if ! read -r -t 20 -u 3 line; then
  echo "conformance: the hub did not start; its log:" >&2
  cat "$out/relay.log" >&2
  exit 1
fi
addr="${line##*ws://}"
addr="${addr%%/*}"

status=0
"$venv/bin/python" tests/conformance/conformance.py "ws://$addr/echo" tests/conformance/expected.toml "$out/report" || status=$?
if [[ $status -ne 0 ]]; then
  echo "conformance: FAILED (report: $out/report/index.html, hub log: $out/relay.log)" >&2
fi
exit "$status"
