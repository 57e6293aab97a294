#!/usr/bin/env bash
# Starts a working Outpost on this machine with embedded defaults: a local cloud (keys,
# relay CA, its QUIC endpoint for relays and WebSocket endpoint for doctors), an enrolled
# and provisioned hub connected to it, and demo tokens printed for three users. State
# lives in ./demo-data (delete it to start over).
#   PORT=8080 CLOUD_PORT=8443 QUIC_PORT=4433 DEMO_DIR=./demo-data scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8080}"
CLOUD_PORT="${CLOUD_PORT:-8443}"
QUIC_PORT="${QUIC_PORT:-4433}"
DEMO_DIR="${DEMO_DIR:-$PWD/demo-data}"

cargo build --bins -q
BIN="$PWD/target/debug"

if [ ! -f "$DEMO_DIR/cloud/cloud.toml" ]; then
  "$BIN/outpost-cloud" init --dir "$DEMO_DIR/cloud"
fi
if [ ! -f "$DEMO_DIR/relay/relay.toml" ]; then
  "$BIN/outpost-cloud" enroll-relay --dir "$DEMO_DIR/cloud" --relay demo-hub \
    --cloud-addr "127.0.0.1:$QUIC_PORT" --out "$DEMO_DIR/demo-hub.bundle.json"
  "$BIN/outpost-relay" init --dir "$DEMO_DIR/relay" --bundle "$DEMO_DIR/demo-hub.bundle.json"
  rm -f "$DEMO_DIR/demo-hub.bundle.json"  # it holds the relay's private key
fi

token() { "$BIN/outpost-cloud" token --dir "$DEMO_DIR/cloud" --ttl 7d "$@"; }
AMINA=$(token --user amina --role worker --room clinic --room village)
BARAKA=$(token --user baraka --role worker --room clinic --room village)
NEEMA=$(token --user dr-neema --role doctor --room clinic)

cat <<MSG

Outpost demo
  Hub (health workers):  ws://127.0.0.1:$PORT/ws   (protocol: docs/protocol.md)
  Cloud (doctors):       ws://127.0.0.1:$CLOUD_PORT/ws, HTTP API http://127.0.0.1:$CLOUD_PORT/api/
  Hub -> cloud uplink:   QUIC 127.0.0.1:$QUIC_PORT   (docs/uplink.md)
  State directory:       $DEMO_DIR

Demo tokens (valid 7 days):
  amina    (worker, rooms clinic+village): $AMINA
  baraka   (worker, rooms clinic+village): $BARAKA
  dr-neema (doctor, room clinic; connect to the cloud): $NEEMA

Open the web client in a browser (each link signs that person in; use separate
browser profiles or private windows for separate people):
  amina:    http://127.0.0.1:$PORT/#token=$AMINA
  baraka:   http://127.0.0.1:$PORT/#token=$BARAKA
  dr-neema: http://127.0.0.1:$CLOUD_PORT/#token=$NEEMA
Hub status page: http://127.0.0.1:$PORT/status

Or speak the protocol with any WebSocket client, e.g. websocat:
  websocat ws://127.0.0.1:$PORT/ws
  {"v":1,"type":"hello","token":"<amina's token>","device":"amina-phone","cursor":null,"epoch":null}
  {"v":1,"type":"send","msg":{"id":"$(cat /proc/sys/kernel/random/uuid)","room":"clinic","kind":"chat","priority":"normal","body":{"text":"hello"},"seq":1}}

Stop with Ctrl-C (graceful: sessions closed, stores flushed).
MSG
"$BIN/outpost-cloud" run --dir "$DEMO_DIR/cloud" --ws "127.0.0.1:$CLOUD_PORT" --quic "127.0.0.1:$QUIC_PORT" \
  2> "$DEMO_DIR/cloud.log" &
CLOUD_PID=$!
trap 'kill -TERM $CLOUD_PID 2>/dev/null; wait $CLOUD_PID 2>/dev/null' EXIT
"$BIN/outpost-relay" run --dir "$DEMO_DIR/relay" --ws "127.0.0.1:$PORT" --cloud "127.0.0.1:$QUIC_PORT"
