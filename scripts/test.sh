#!/usr/bin/env bash
# Runs every test: unit and property tests beside the code, the end-to-end scenarios in
# tests/ that start real outpost-relay and outpost-cloud processes (the hub also as built
# for a Pi, under qemu), the web client's protocol unit tests (node) and browser tests in
# Chromium, and the WebSocket conformance suite (Autobahn cases 1-10, tests/conformance/).
# Installs what the tests need on its own; assumes only a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# The scenarios start the real binaries, so build them first (debug profile; see
# tests/src/proc.rs for how they are found).
cargo build --workspace --bins --locked

# The emulated smoke test (tests/tests/qemu_smoke.rs) runs the hub as built for a Pi
# (aarch64) under qemu-user. cross-build.sh installs the rustup target, Debian's cross gcc
# and qemu-user when missing. The dev profile is the quickest to build from nothing (no
# LTO; dependencies at opt-level 2 as in host builds); the release profile's fat LTO would
# add several minutes for no gain in what the test proves. Only a failed installation
# (exit 3) skips the test, and says so; a failed build fails the run. Under CI (`CI` set,
# as .ci/run does) a skip fails the run too, unless ALLOW_QEMU_SKIP=1 says a skip is
# acceptable for this run: a green CI must mean the Pi's build was tested.
cross_dir="${CARGO_TARGET_DIR:-target/cross}"
[[ $cross_dir = /* ]] || cross_dir="$PWD/$cross_dir"
qemu_status=0
CARGO_TARGET_DIR="$cross_dir" scripts/cross-build.sh --profile dev --target aarch64 --relay-only || qemu_status=$?
case $qemu_status in
  0)
    export QEMU_RELAY_BIN="$cross_dir/aarch64-unknown-linux-gnu/debug/outpost-relay"
    export QEMU_RELAY_WRAPPER="qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib"
    unset QEMU_SMOKE_SKIP
    ;;
  3)
    if [[ -n ${CI:-} && ${ALLOW_QEMU_SKIP:-} != 1 ]]; then
      echo "test.sh: the aarch64 cross toolchain or qemu-user could not be installed, so the Pi's build cannot be tested; under CI that fails the run (set ALLOW_QEMU_SKIP=1 to accept a skip)" >&2
      exit 3
    fi
    export QEMU_SMOKE_SKIP="the aarch64 cross toolchain or qemu-user could not be installed (see scripts/cross-build.sh output above)"
    unset QEMU_RELAY_BIN
    echo "WARNING: the qemu smoke test will be SKIPPED: $QEMU_SMOKE_SKIP" >&2
    ;;
  *)
    echo "test.sh: the aarch64 cross build failed (exit $qemu_status)" >&2
    exit "$qemu_status"
    ;;
esac

# The cloud's PostgreSQL backend is tested against private clusters that the tests start
# themselves (initdb in a temp dir, pg_ctl on a free port; store-postgres/src/testing.rs):
# only the server binaries are needed, from Debian's package.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql >/dev/null
fi

# LAN HTTPS is tested against a real ACME CA, Debian's pebble and its DNS test server
# (tests/src/acme.rs; the browser scenarios start their own), and the hub's name is
# resolved by the dnsmasq a Pi serves its Wi-Fi with (dnsmasq-base: the program, no service).
if [[ ! -x /usr/bin/pebble || ! -x /usr/bin/pebble-challtestsrv || ! -x /usr/sbin/dnsmasq ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq pebble dnsmasq-base >/dev/null
fi

status=0

# The web client's protocol rules (relay/web/protocol.js: cursor, outbox, resync, receipts)
# without a page, in node's own test runner (node 20 or later; no npm packages).
node --test tests/web-unit/ || status=$?

# The web client in a real Chromium against real hub and cloud processes
# (tests/browser/run.sh installs Debian's chromium and playwright-core when missing).
# It runs before the Rust suite so that the suite's summary closes the output.
# Its output is kept so that a failure's details are repeated at the very end, where a
# reader of a long CI log looks first.
browser_log="$(mktemp)"
browser_status=0
tests/browser/run.sh 2>&1 | tee "$browser_log" || browser_status=$?
[[ $browser_status -eq 0 ]] || status=$browser_status

# WebSocket conformance: the Autobahn cases 1-10 (kosoku, from PyPI, in a venv under
# target/) against the hub's test-only /echo route, which has /ws's settings and limits.
# Every case must be OK or accepted with a reason in tests/conformance/expected.toml
# (docs/conformance.md).
tests/conformance/run.sh || status=$?

# The layers stay one-way: no module imports another that imports it back, in any crate
# (docs/architecture.md).
python3 scripts/check-cycles.py || status=$?

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast || status=$?
else
  cargo test --workspace --locked --no-fail-fast || status=$?
fi
if [[ $browser_status -ne 0 ]]; then
  echo "=== the browser scenarios failed; their failures again (full output above) ===" >&2
  sed -n '/failing tests:/,$p' "$browser_log" | head -n 300 >&2
fi
rm -f "$browser_log"
if [[ -n ${QEMU_SMOKE_SKIP:-} ]]; then
  echo "WARNING: the qemu smoke test was SKIPPED: $QEMU_SMOKE_SKIP" >&2
fi
exit "$status"
