#!/usr/bin/env bash
# Makes sure a Docker engine answers on /var/run/docker.sock: installs Debian's docker.io
# when missing and starts dockerd in the background when it is not running.
# Needs root on a fresh machine; does nothing when an engine already answers.
set -euo pipefail

log() { echo "ensure-docker: $*" >&2; }

if docker info >/dev/null 2>&1; then
    log "engine already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi

log "starting dockerd (log: /var/log/cantila-dockerd.log)"
nohup dockerd >/var/log/cantila-dockerd.log 2>&1 &

for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        log "engine ready ($(docker version --format '{{.Server.Version}} API {{.Server.APIVersion}}'))"
        exit 0
    fi
    sleep 1
done
log "dockerd did not answer within 60 s; its log:"
tail -n 30 /var/log/cantila-dockerd.log >&2 || true
exit 1
