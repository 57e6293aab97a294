#!/usr/bin/env bash
# Installs the peer brokers that `outpost-bench --phases peers` compares against, from
# Debian's packages: mosquitto (2.0.x) and nats-server (2.9.x). Needs root. The bench runs
# this itself when either binary is missing; running it by hand first is fine too.
# Debian's packages start system services; the bench never uses them (it starts private
# instances on free ports), and this script stops them so they take no CPU during a run.
set -euo pipefail
if command -v mosquitto >/dev/null && command -v nats-server >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q mosquitto nats-server
if command -v systemctl >/dev/null; then
  systemctl stop mosquitto nats-server 2>/dev/null || true
fi
