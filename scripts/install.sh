#!/usr/bin/env bash
# Installs Cantila on a Debian or Ubuntu VPS: the binary, a config, a system user, the
# systemd units (the socket unit holds the listening sockets), and Docker when missing;
# then starts the service.
#
#   sudo scripts/install.sh [--binary PATH] [--base-domain apps.example.com] [--no-start]
#
# Without --binary it builds target/release/cantila with cargo first. Re-running upgrades
# the binary and units and keeps the existing config and data; a running daemon is
# upgraded with a hand-off (`systemctl reload cantila`), which refuses no connection.
set -euo pipefail
cd "$(dirname "$0")/.."

BINARY=""
BASE_DOMAIN=""
START=1
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) BINARY="$2"; shift 2 ;;
        --base-domain) BASE_DOMAIN="$2"; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "install: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }

if [ -z "$BINARY" ]; then
    log "building the release binary"
    cargo build --release --locked
    BINARY=target/release/cantila
fi
[ -x "$BINARY" ] || { echo "install.sh: $BINARY is not an executable" >&2; exit 1; }

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing Docker (docker.io)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io
fi
getent group docker >/dev/null || groupadd --system docker

if ! id cantila >/dev/null 2>&1; then
    log "creating system user cantila"
    useradd --system --home-dir /var/lib/cantila --shell /usr/sbin/nologin --user-group cantila
fi

log "installing /usr/local/bin/cantila"
install -m 0755 "$BINARY" /usr/local/bin/cantila.new
mv -f /usr/local/bin/cantila.new /usr/local/bin/cantila

install -d -m 0755 /etc/cantila
if [ ! -f /etc/cantila/config.toml ]; then
    log "writing /etc/cantila/config.toml from config.example.toml"
    sed -e 's|^data_dir = .*|data_dir = "/var/lib/cantila"|' config.example.toml > /etc/cantila/config.toml
    if [ -n "$BASE_DOMAIN" ]; then
        sed -i -e "s|^base_domain = .*|base_domain = \"$BASE_DOMAIN\"|" /etc/cantila/config.toml
    fi
    chmod 0644 /etc/cantila/config.toml
else
    log "keeping the existing /etc/cantila/config.toml"
fi

log "installing the systemd units"
install -m 0644 systemd/cantila.socket /etc/systemd/system/cantila.socket
install -m 0644 systemd/cantila.service /etc/systemd/system/cantila.service
systemctl daemon-reload
if [ "$START" -eq 1 ]; then
    systemctl enable docker.service cantila.socket cantila.service
    systemctl start docker.service
    if systemctl is-active --quiet cantila.socket; then
        if systemctl is-active --quiet cantila.service; then
            log "upgrading the running daemon with a hand-off (systemctl reload cantila)"
            systemctl reload cantila.service
        else
            systemctl start cantila.service
        fi
    else
        # The first install of the socket unit: a daemon of an earlier install holds the
        # ports itself, so it stops once; every later upgrade is a hand-off.
        systemctl stop cantila.service 2>/dev/null || true
        systemctl start cantila.socket
        systemctl start cantila.service
    fi
    log "started; the admin token is in /var/lib/cantila/admin-token (readable by root and cantila)"
    log "try: sudo cantila whoami --data-dir /var/lib/cantila"
else
    log "installed; start with: systemctl enable --now cantila.socket cantila.service"
fi
