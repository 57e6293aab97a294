#!/usr/bin/env bash
# Cross-builds the Pi binaries without Docker: outpost-relay for aarch64 (Pi 3/4/5 with a
# 64-bit OS) and armv7 (32-bit Raspberry Pi OS), and outpost-cloud for aarch64 (an ARM
# server at the hospital). Installs what it needs first (rustup targets; Debian's cross
# gcc and qemu-user), then prints each binary's stripped size and build time.
#
#   scripts/cross-build.sh                         # release: relay x2, cloud aarch64
#   scripts/cross-build.sh --profile dev --target aarch64 --relay-only   # what the tests use
#   scripts/cross-build.sh --install-only          # tools only, no build
#
# Options:
#   --profile P     cargo profile: release (default; fat LTO, one codegen unit: the
#                   smallest and fastest binary, and the slowest build), bench-fast
#                   (thin LTO) or dev (what the emulated smoke test runs)
#   --target T      aarch64 or armv7 (repeatable; default both)
#   --relay-only    skip outpost-cloud
#   --install-only  install the tools and stop
#
# Output goes to $CARGO_TARGET_DIR (default target/cross, so a cross build never waits
# for or disturbs the main target/ directory), e.g.
# target/cross/aarch64-unknown-linux-gnu/release/outpost-relay. The linkers and qemu
# runners are set in .cargo/config.toml. Exit status: 0 built, cargo's if a build failed,
# 3 the tools could not be installed (scripts/test.sh turns that into a reported skip).
#
# The binaries need glibc >= 2.34 (Raspberry Pi OS bookworm or later): see
# docs/operations.md.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
targets=()
cloud=1
install_only=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    --relay-only) cloud=0; shift ;;
    --install-only) install_only=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "cross-build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ ${#targets[@]} -eq 0 ]] && targets=(aarch64 armv7)

triple() {
  case "$1" in
    aarch64) echo aarch64-unknown-linux-gnu ;;
    armv7) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "cross-build.sh: unknown target $1 (aarch64 or armv7)" >&2; exit 2 ;;
  esac
}
gnu_prefix() {
  case "$1" in
    aarch64) echo aarch64-linux-gnu ;;
    armv7) echo arm-linux-gnueabihf ;;
  esac
}

# --- tools -------------------------------------------------------------------------
install_tools() {
  local want_rust=() want_apt=()
  local installed
  installed="$(rustup target list --installed 2>/dev/null || true)"
  for t in "${targets[@]}"; do
    grep -qx "$(triple "$t")" <<<"$installed" || want_rust+=("$(triple "$t")")
  done
  for t in "${targets[@]}"; do
    case "$t" in
      aarch64) command -v aarch64-linux-gnu-gcc >/dev/null && [[ -d /usr/aarch64-linux-gnu/lib ]] \
                 || want_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
               command -v qemu-aarch64 >/dev/null || want_apt+=(qemu-user) ;;
      armv7) command -v arm-linux-gnueabihf-gcc >/dev/null && [[ -d /usr/arm-linux-gnueabihf/lib ]] \
               || want_apt+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
             command -v qemu-arm >/dev/null || want_apt+=(qemu-user) ;;
    esac
  done
  command -v file >/dev/null || want_apt+=(file)
  if [[ ${#want_rust[@]} -gt 0 ]]; then
    echo "cross-build: rustup target add ${want_rust[*]}"
    rustup target add "${want_rust[@]}" || return 3
  fi
  if [[ ${#want_apt[@]} -gt 0 ]]; then
    local sudo=()
    [[ $(id -u) -ne 0 ]] && sudo=(sudo -n)
    echo "cross-build: apt-get install ${want_apt[*]}"
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq || return 3
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${want_apt[@]}" || return 3
  fi
  return 0
}

if ! install_tools; then
  echo "cross-build: could not install the cross toolchain or qemu (see above)" >&2
  exit 3
fi
[[ $install_only -eq 1 ]] && exit 0

# --- build -------------------------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cross}"
profile_dir="$profile"
[[ $profile == dev ]] && profile_dir=debug

summary=()
for t in "${targets[@]}"; do
  tr="$(triple "$t")"
  pkgs=(outpost-relay)
  [[ $cloud -eq 1 && $t == aarch64 ]] && pkgs+=(outpost-cloud)
  for p in "${pkgs[@]}"; do
    echo "cross-build: cargo build --profile $profile --target $tr -p $p"
    start=$(date +%s)
    cargo build --locked --profile "$profile" --target "$tr" -p "$p" --bin "$p"
    secs=$(( $(date +%s) - start ))
    out="$CARGO_TARGET_DIR/$tr/$profile_dir/$p"
    # Measure the stripped size on a copy: the release profile strips already, dev does not.
    stripped="$(mktemp)"
    "$(gnu_prefix "$t")-strip" -o "$stripped" "$out"
    size=$(stat -c %s "$stripped")
    rm -f "$stripped"
    summary+=("$(printf '%-14s %-32s %-10s %7.1f MB stripped (%d bytes)  built in %dm%02ds' \
      "$p" "$tr" "$profile" "$(awk -v s="$size" 'BEGIN { print s / 1000000 }')" "$size" $((secs / 60)) $((secs % 60)))")
    file -b "$out" | cut -d, -f1-2 | sed "s|^|cross-build: $out: |"
  done
done

echo
echo "cross-build: summary (build time includes the dependencies not yet built for that target/profile)"
printf '  %s\n' "${summary[@]}"
