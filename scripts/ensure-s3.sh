#!/usr/bin/env bash
# Makes sure an S3-compatible server runs on loopback for the backup-upload tests: moto's
# server (PyPI, pinned) in a venv outside the checkout, started in the background on
# 127.0.0.1:$S3_TEST_PORT when nothing answers there yet. Prints its endpoint URL on stdout
# as its last line.
#
#   S3_TEST_PORT=5931 MOTO_VENV=/opt/cantila-tools/s3-venv scripts/ensure-s3.sh
set -euo pipefail

VERSION=5.2.5
PORT="${S3_TEST_PORT:-5931}"
VENV="${MOTO_VENV:-/opt/cantila-tools/s3-venv}"
EXE="$VENV/bin/moto_server"
LOG="${MOTO_LOG:-/tmp/cantila-moto-$PORT.log}"
ENDPOINT="http://127.0.0.1:$PORT"

log() { printf 'ensure-s3: %s\n' "$*" >&2; }

# moto serves its dashboard at /moto-api/ (cheap, unlike its data dump, which fails once
# the store holds large objects); anything else on the port is not ours to use.
answers() { curl -sf -m 5 -o /dev/null "$ENDPOINT/moto-api/"; }

if answers; then
    echo "$ENDPOINT"
    exit 0
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$VERSION')" 2>/dev/null; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
    fi
    log "installing moto[server]==$VERSION into $VENV"
    mkdir -p "$(dirname "$VENV")"
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$VERSION" >&2
fi
log "starting moto_server on 127.0.0.1:$PORT (log: $LOG)"
setsid "$EXE" -H 127.0.0.1 -p "$PORT" </dev/null >"$LOG" 2>&1 &
for _ in $(seq 1 100); do
    if answers; then
        echo "$ENDPOINT"
        exit 0
    fi
    sleep 0.2
done
log "moto_server did not answer on $ENDPOINT within 20 s; its log:"
tail -n 20 "$LOG" >&2 || true
exit 1
