#!/usr/bin/env bash
# Tries the amd64 packages the way an admin uses them: install → provision → run →
# upgrade → remove → purge, in a throwaway root, and checks what each step promises.
#
#   scripts/package.sh               # first: builds the .debs
#   sudo scripts/package-test.sh     # needs root (namespaces, overlayfs, chroot)
#
# The throwaway root is an overlay of this machine's own / (it must be Debian bookworm or
# later, like the hub) in private mount, PID and network namespaces: dpkg, adduser and the
# maintainer scripts run for real in a chroot on it, every change lands in a temporary
# upper layer, and all of it disappears when the script ends. Nothing on the machine is
# touched and port 8080 is the namespace's own. systemd is not running in there (the
# maintainer scripts then skip systemctl, as in any chroot), so the hub is started the
# way its unit would start it: the unit's ExecStartPre and ExecStart, as user outpost,
# with /etc/outpost/relay.env in the environment. The units themselves are checked with
# `systemd-analyze verify`. Takes well under a minute; not part of scripts/test.sh
# because it needs root and the release packages, which take long to build.
set -euo pipefail
cd "$(dirname "$0")/.."

debs="${CARGO_TARGET_DIR:-target/cross}/debian"
relay_deb=$(ls -t "$debs"/outpost-relay_*_amd64.deb 2>/dev/null | head -n 1 || true)
cloud_deb=$(ls -t "$debs"/outpost-cloud_*_amd64.deb 2>/dev/null | head -n 1 || true)
if [[ -z $relay_deb || -z $cloud_deb ]]; then
  echo "package-test: no amd64 packages in $debs: run scripts/package.sh first" >&2
  exit 2
fi
[[ $(id -u) -eq 0 ]] || { echo "package-test: run as root" >&2; exit 2; }
for cmd in unshare chroot dpkg-deb curl; do
  command -v "$cmd" >/dev/null || { echo "package-test: $cmd is missing" >&2; exit 2; }
done

work=$(mktemp -d /var/tmp/outpost-package-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{upper,work,root,debs}

# The upgrade: the same package with a higher version, as the next release would be.
cp "$relay_deb" "$work/debs/relay-1.deb"
cp "$cloud_deb" "$work/debs/cloud-1.deb"
dpkg-deb -R "$relay_deb" "$work/repack"
sed -i -E 's/^(Version: .*)$/\1+upgrade1/' "$work/repack/DEBIAN/control"
dpkg-deb --root-owner-group -b "$work/repack" "$work/debs/relay-2.deb" >/dev/null
rm -rf "$work/repack"

cat > "$work/debs/steps.sh" <<'STEPS'
set -euo pipefail
step() { echo; echo "== $*"; }
ok() { echo "   ok: $*"; }
fail() { echo "   FAILED: $*"; exit 1; }
unit_line() { grep "^$2=" "/usr/lib/systemd/system/$1" | tail -n 1 | cut -d= -f2- | sed 's/^[+-]*//'; }
env_of() { grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$1" || true; }
# Starts the hub as its unit would (ExecStartPre as root, ExecStart as outpost with the
# env file), waits for /healthz, stops it with SIGTERM and checks the exit status.
run_hub() {
  local pre start pid code
  pre=$(grep '^ExecStartPre=' /usr/lib/systemd/system/outpost-relay.service.d/package.conf | cut -d= -f2- | sed 's/^[+-]*//')
  start=$(unit_line outpost-relay.service ExecStart)
  $pre
  # shellcheck disable=SC2046
  setpriv --reuid outpost --regid outpost --init-groups \
    env -i PATH=/usr/bin:/bin RUST_LOG=info $(env_of /etc/outpost/relay.env) $start \
    >/tmp/hub.out 2>/tmp/hub.log &
  pid=$!
  for _ in $(seq 100); do curl -fsS http://127.0.0.1:8080/healthz >/tmp/health 2>/dev/null && break; sleep 0.1; done
  [[ $(cat /tmp/health 2>/dev/null) == ok ]] || { cat /tmp/hub.log; fail "no /healthz answer"; }
  ok "$(head -n 1 /tmp/hub.out); GET /healthz: $(cat /tmp/health)"
  kill -TERM "$pid"
  code=0; wait "$pid" || code=$?
  [[ $code -eq 0 ]] || { cat /tmp/hub.log; fail "exit status $code after SIGTERM"; }
  ok "SIGTERM: exit status 0; log: $(grep -c . /tmp/hub.log) lines, last: $(tail -n 1 /tmp/hub.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-100)"
}

ip link set lo up

step "install: dpkg -i outpost-relay outpost-cloud"
dpkg -i /debs/relay-1.deb /debs/cloud-1.deb
getent passwd outpost | grep -q ':/var/lib/outpost:/usr/sbin/nologin$' && ok "system user: $(getent passwd outpost)"
ok "/var/lib/outpost: $(stat -c '%U:%G %a' /var/lib/outpost)"
[[ $(stat -c '%U %a' /var/lib/outpost) == "outpost 750" ]] || fail "owner or mode of /var/lib/outpost"
for p in outpost-relay outpost-cloud; do
  ok "$p conffiles: $(dpkg-query -W -f='${Conffiles}\n' "$p" | awk 'NF {print $1}' | tr '\n' ' ')"
done
ok "outpost-relay --version: $(outpost-relay --version)"
for u in outpost-relay.service outpost-relay.path outpost-cloud.service outpost-cloud.path; do
  out=$(systemd-analyze verify "/usr/lib/systemd/system/$u" 2>&1 || true)
  [[ -z $out ]] && ok "systemd-analyze verify $u: clean" || echo "   note: systemd-analyze verify $u: $out"
done

step "provision: outpost-cloud init + enroll-relay (the hospital), outpost-relay init (the hub)"
outpost-cloud init --dir /var/lib/outpost/cloud
outpost-cloud enroll-relay --dir /var/lib/outpost/cloud --relay village-7 --cloud-addr 127.0.0.1:4433 --out /media-usb.bundle.json
outpost-relay init --dir /var/lib/outpost/relay --bundle /media-usb.bundle.json
ok "relay dir before first start: $(stat -c '%U:%G' /var/lib/outpost/relay/identity/relay.key) (root: made by sudo init)"

step "run the hub as its unit does"
run_hub
ok "after ExecStartPre: relay.key $(stat -c '%U:%G %a' /var/lib/outpost/relay/identity/relay.key), relay.db $(stat -c '%U:%G %a' /var/lib/outpost/relay/data/relay.db)"

step "admin edits the conffile: OUTPOST_LIMITS__MAX_DEVICES=500 in /etc/outpost/relay.env"
sed -i 's/^#OUTPOST_LIMITS__MAX_DEVICES=1000$/OUTPOST_LIMITS__MAX_DEVICES=500/' /etc/outpost/relay.env
grep -q '^OUTPOST_LIMITS__MAX_DEVICES=500$' /etc/outpost/relay.env && ok "edited"
key_before=$(sha256sum /var/lib/outpost/relay/identity/relay.key)

step "upgrade: dpkg -i outpost-relay (next version)"
dpkg -i /debs/relay-2.deb
ok "version now $(dpkg-query -W -f='${Version}' outpost-relay)"
grep -q '^OUTPOST_LIMITS__MAX_DEVICES=500$' /etc/outpost/relay.env && ok "the admin's edit of relay.env was kept" || fail "conffile edit lost"
[[ $(sha256sum /var/lib/outpost/relay/identity/relay.key) == "$key_before" ]] && ok "identity and data kept" || fail "identity changed"
run_hub

step "remove: dpkg -r outpost-relay"
dpkg -r outpost-relay
[[ ! -e /usr/bin/outpost-relay ]] && ok "binary gone"
[[ -f /etc/outpost/relay.env && -f /var/lib/outpost/relay/data/relay.db ]] && ok "relay.env and the hub's data kept"

step "purge: dpkg -P outpost-relay (data kept unless asked)"
dpkg -P outpost-relay
[[ ! -e /etc/outpost/relay.env ]] && ok "relay.env gone"
[[ -f /var/lib/outpost/relay/data/relay.db ]] && ok "the hub's data kept: $(ls /var/lib/outpost/relay | tr '\n' ' ')"
getent passwd outpost >/dev/null && ok "user outpost kept"

step "purge with consent: PURGE_OUTPOST_DATA=yes dpkg -P outpost-cloud"
PURGE_OUTPOST_DATA=yes dpkg -P outpost-cloud
[[ ! -e /var/lib/outpost/cloud ]] && ok "/var/lib/outpost/cloud deleted"
[[ ! -e /etc/outpost ]] && ok "/etc/outpost gone (empty)"
ok "left in /var/lib/outpost: $(ls /var/lib/outpost | tr '\n' ' ')"
echo
echo "package-test: all steps passed"
STEPS

# Private mounts, PIDs and network: the overlay, the hub and port 8080 vanish with it.
unshare --mount --pid --net --fork --mount-proc bash -euo pipefail -c '
  w="$1"
  mount --make-rprivate /
  mount -t overlay overlay -o lowerdir=/,upperdir="$w/upper",workdir="$w/work" "$w/root"
  mount -t proc proc "$w/root/proc"
  mount --rbind /dev "$w/root/dev"
  mount -t sysfs sysfs "$w/root/sys" 2>/dev/null || true
  for d in run tmp; do mount -t tmpfs tmpfs "$w/root/$d"; done
  mkdir -p "$w/root/debs"
  mount --bind "$w/debs" "$w/root/debs"
  exec chroot "$w/root" /bin/bash /debs/steps.sh
' package-test "$work"
