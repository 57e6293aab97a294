#!/usr/bin/env bash
# Browser tests of the web client (relay/web) in Chromium, against real processes: each
# test makes its own cloud (`outpost-cloud init`), enrolls and provisions a hub
# (`enroll-relay`, `outpost-relay init`), runs both, and signs in with tokens from
# `outpost-cloud token`. Uses the debug binaries: run `cargo build --bins` first.
# The suite runs twice: phones open the hub by address (http://127.0.0.1:PORT), then by
# a LAN name over HTTPS (https://hub.village:PORT, a certificate from a test CA that
# Chromium trusts), as in a village; OUTPOST_BROWSER_HUB=address or =name runs one only.
#   tests/browser/run.sh                         # every scenario, both ways
#   tests/browser/run.sh tests/chat.test.mjs     # one (paths relative to tests/browser)
# Screenshots and server logs go to tests/browser/artifacts/ (by name: artifacts/by-name/).
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
bin="${HARNESS_BIN_DIR:-$root/target/debug}"

for b in outpost-relay outpost-cloud; do
  if [[ ! -x "$bin/$b" ]]; then
    echo "run.sh: $bin/$b is missing: run \`cargo build --bins\` first" >&2
    exit 2
  fi
done

# Debian's Chromium (playwright's own browser downloads are not used); openssl makes the
# test CA and certificates, certutil (libnss3-tools) the NSS database Chromium trusts them
# from; pebble is the ACME CA (and its test DNS server) the cloud gets hubs' certificates from.
missing=()
command -v pebble-challtestsrv >/dev/null || missing+=(pebble)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
command -v certutil >/dev/null || missing+=(libnss3-tools)
if [[ ${#missing[@]} -gt 0 ]]; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y "${missing[@]}"
fi
command -v node >/dev/null || { echo "run.sh: node (20 or later) is needed" >&2; exit 2; }

# playwright-core only, at the version in package-lock.json; it downloads no browser.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

rm -rf artifacts
mkdir -p artifacts
if [[ $# -eq 0 ]]; then
  set -- tests/*.test.mjs
fi
export HARNESS_BIN_DIR="$bin"
modes=(address name)
[[ -n "${OUTPOST_BROWSER_HUB:-}" ]] && modes=("$OUTPOST_BROWSER_HUB")
failed=()
for mode in "${modes[@]}"; do
  echo "=== hub opened by $mode ==="
  OUTPOST_BROWSER_HUB="$mode" node --test --test-concurrency=1 --test-reporter=spec "$@" || failed+=("$mode")
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "run.sh: failed with the hub opened by: ${failed[*]}" >&2
  exit 1
fi
