#!/usr/bin/env bash
# API benchmark: idle RSS of `cantila serve`, and the request rate of GET /v1/projects
# (authenticated, 100 projects, one page of 100) beside nginx serving the same JSON bytes
# as a static file: the floor for "one HTTP response of this size on this machine".
# Reports both and their ratio from one run. Loopback only; stops by itself.
#
#   scripts/bench/api.sh [--duration 10] [--connections 10]
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=10
CONNECTIONS=10
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        *) echo "usage: $0 [--duration S] [--connections N]" >&2; exit 2 ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx
need curl curl

cargo build --release --locked -q
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port)
NGINX_PORT=$(free_port)

"${CARGO_TARGET_DIR:-target}/release/cantila" serve --data-dir "$WORK/data" --api-listen "127.0.0.1:$API_PORT" \
    --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
CANTILA_PID=$!
PIDS+=("$CANTILA_PID")
for _ in $(seq 1 100); do [ -s "$WORK/data/admin-token" ] && curl -sf "http://127.0.0.1:$API_PORT/v1/openapi.json" >/dev/null && break; sleep 0.1; done
TOKEN=$(cat "$WORK/data/admin-token")
API="http://127.0.0.1:$API_PORT"

for n in $(seq 1 100); do
    curl -sf -X POST "$API/v1/projects" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d "{\"name\":\"bench-$n\"}" >/dev/null
done
curl -sf "$API/v1/projects?limit=100" -H "Authorization: Bearer $TOKEN" >"$WORK/projects.json"
BODY_BYTES=$(wc -c <"$WORK/projects.json")

sleep 2
RSS_IDLE_KB=$(awk '/VmRSS/ {print $2}' "/proc/$CANTILA_PID/status")

mkdir -p "$WORK/www"
cp "$WORK/projects.json" "$WORK/www/projects.json"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
        default_type application/json;
    }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=("$!")
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$NGINX_PORT/projects.json" >/dev/null && break; sleep 0.1; done

run_wrk() { # url [header]
    if [ $# -gt 1 ]; then
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "$2" "$1"
    else
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$1"
    fi
}
rate() { awk '/Requests\/sec/ {print $2}'; }
p99() { awk '/ 99%/ {print $2}'; }

echo "== cantila GET /v1/projects?limit=100 ($BODY_BYTES bytes)" >&2
run_wrk "$API/v1/projects?limit=100" "Authorization: Bearer $TOKEN" >"$WORK/wrk-cantila.txt"
echo "== nginx static file, same bytes" >&2
run_wrk "http://127.0.0.1:$NGINX_PORT/projects.json" >"$WORK/wrk-nginx.txt"
RSS_AFTER_KB=$(awk '/VmRSS/ {print $2}' "/proc/$CANTILA_PID/status")

CANTILA_RATE=$(rate <"$WORK/wrk-cantila.txt")
NGINX_RATE=$(rate <"$WORK/wrk-nginx.txt")
NON2XX=$(awk '/Non-2xx/ {print $5}' "$WORK/wrk-cantila.txt")
printf '\nmachine: %s cores; wrk -t1 -c%s -d%ss; body %s bytes\n' "$(nproc)" "$CONNECTIONS" "$DURATION" "$BODY_BYTES"
printf 'cantila idle RSS:            %6.1f MiB (100 projects, after start-up)\n' "$(awk "BEGIN{print $RSS_IDLE_KB/1024}")"
printf 'cantila RSS after load:      %6.1f MiB\n' "$(awk "BEGIN{print $RSS_AFTER_KB/1024}")"
printf 'cantila GET /v1/projects:    %10s req/s  p99 %s  non-2xx %s\n' "$CANTILA_RATE" "$(p99 <"$WORK/wrk-cantila.txt")" "${NON2XX:-0}"
printf 'nginx static (floor):        %10s req/s  p99 %s\n' "$NGINX_RATE" "$(p99 <"$WORK/wrk-nginx.txt")"
printf 'ratio cantila/nginx:         %10.2f\n' "$(awk "BEGIN{print $CANTILA_RATE/$NGINX_RATE}")"
