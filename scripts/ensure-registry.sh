#!/usr/bin/env bash
# Makes sure a container registry runs on loopback for the image-source tests: Debian's
# `docker-registry` (the CNCF distribution registry) with htpasswd auth (`apache2-utils`
# makes the file), installed when missing and started in the background on
# 127.0.0.1:$REGISTRY_TEST_PORT when nothing answers there yet. A registry already
# answering is left as it is. Prints its address (host:port) on stdout as its last line.
# The test user and password are fixed (the registry holds only test images) and written
# to $REGISTRY_DIR/credentials as `user:password`; scripts/test.sh exports them.
#
# Docker treats registries on 127.0.0.0/8 as insecure-allowed, so plain HTTP works.
#
#   REGISTRY_TEST_PORT=5932 REGISTRY_DIR=/var/lib/cantila-test-registry scripts/ensure-registry.sh
set -euo pipefail

PORT="${REGISTRY_TEST_PORT:-5932}"
DIR="${REGISTRY_DIR:-/var/lib/cantila-test-registry}"
USER_NAME="${REGISTRY_TEST_USER:-cantila-test}"
PASSWORD="${REGISTRY_TEST_PASSWORD:-cantila-test-password}"
LOG="${REGISTRY_LOG:-/tmp/cantila-registry-$PORT.log}"
ADDRESS="127.0.0.1:$PORT"

log() { printf 'ensure-registry: %s\n' "$*" >&2; }

# The distribution registry answers /v2/ with 401 and its API version header when auth
# is on; anything else on the port is not ours to use.
answers() {
    curl -s -m 5 -o /dev/null -D - "http://$ADDRESS/v2/" 2>/dev/null \
        | grep -qi '^docker-distribution-api-version: registry/2.0'
}

if answers; then
    echo "$ADDRESS"
    exit 0
fi
if ! command -v docker-registry >/dev/null || ! command -v htpasswd >/dev/null; then
    log "installing docker-registry and apache2-utils"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq docker-registry apache2-utils >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq docker-registry apache2-utils >/dev/null; }
fi
mkdir -p "$DIR/storage"
chmod 700 "$DIR"
# bcrypt (-B), the only hash the registry accepts.
htpasswd -Bbc "$DIR/htpasswd" "$USER_NAME" "$PASSWORD" 2>/dev/null
printf '%s:%s\n' "$USER_NAME" "$PASSWORD" >"$DIR/credentials"
cat >"$DIR/config.yml" <<CONFIG
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
http:
  addr: $ADDRESS
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: cantila-test-registry
    path: $DIR/htpasswd
CONFIG
log "starting docker-registry on $ADDRESS (storage: $DIR/storage, log: $LOG)"
setsid docker-registry serve "$DIR/config.yml" </dev/null >"$LOG" 2>&1 &
for _ in $(seq 1 100); do
    if answers; then
        echo "$ADDRESS"
        exit 0
    fi
    sleep 0.2
done
log "docker-registry did not answer on $ADDRESS within 20 s; its log:"
tail -n 20 "$LOG" >&2 || true
exit 1
