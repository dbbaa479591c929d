#!/usr/bin/env bash
# Edge benchmark: one upstream (nginx serving a 100-byte file), measured with wrk directly,
# through Cantila's edge, and through nginx configured as a reverse proxy to the same
# upstream, in one run. Reports requests/s and p99 of each and the ratios. Both proxies
# keep a keep-alive pool to the upstream and set the same forwarding headers. Cantila's
# edge runs as `examples/edge_bench.rs` (the daemon's `edge::serve_http` with a one-route
# table given on the command line). Loopback only; stops by itself. HTTP only for now:
# the HTTPS comparison comes with TLS termination.
#
#   scripts/bench/edge.sh [--duration 10] [--connections 50] [--threads 1]
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=10
CONNECTIONS=50
THREADS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        *) echo "usage: $0 [--duration S] [--connections N] [--threads N]" >&2; exit 2 ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx
need curl curl
need python3 python3

cargo build --release --locked -q --example edge_bench
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UPSTREAM_PORT=$(free_port)
EDGE_PORT=$(free_port)
PROXY_PORT=$(free_port)
HOST=bench.test

mkdir -p "$WORK/www" "$WORK/upstream" "$WORK/proxy"
head -c 100 /dev/zero | tr '\0' 'x' >"$WORK/www/hello.txt"
# nginx workers run as an unprivileged user when started by root: let them read the file.
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/hello.txt"

# The upstream: one nginx worker serving the file, keep-alive never cut short.
cat >"$WORK/upstream/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        root $WORK/www;
        default_type text/plain;
    }
}
CONF
# The nginx reverse proxy: a keep-alive pool to the upstream and the same headers the
# edge sets, with as many workers as the machine has cores (the edge's tokio runtime
# also uses every core).
cat >"$WORK/proxy/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 256;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id;
        }
    }
}
CONF
nginx -c "$WORK/upstream/nginx.conf" -p "$WORK/upstream" &
PIDS+=("$!")
nginx -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy" &
PIDS+=("$!")
"$TARGET_DIR/release/examples/edge_bench" --listen "127.0.0.1:$EDGE_PORT" \
    --upstream "127.0.0.1:$UPSTREAM_PORT" --host "$HOST" >"$WORK/edge.out" 2>"$WORK/edge.err" &
EDGE_PID=$!
PIDS+=("$EDGE_PID")

DIRECT="http://127.0.0.1:$UPSTREAM_PORT/hello.txt"
EDGE="http://127.0.0.1:$EDGE_PORT/hello.txt"
PROXY="http://127.0.0.1:$PROXY_PORT/hello.txt"
ready() { for _ in $(seq 1 100); do curl -sf -H "Host: $HOST" "$1" >/dev/null && return 0; sleep 0.1; done; echo "not answering: $1" >&2; tail -n 5 "$WORK"/*/error.log "$WORK"/edge.* >&2; exit 1; }
ready "$DIRECT"; ready "$EDGE"; ready "$PROXY"

run_wrk() { # name url duration
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3s" --latency -H "Host: $HOST" "$2" >"$WORK/wrk-$1.txt"
}
rate() { awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$1.txt"; }
p99() { awk '/ 99%/ {print $2}' "$WORK/wrk-$1.txt"; }
errors() { # non-2xx responses plus socket errors
    awk '/Non-2xx/ {n += $4} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$WORK/wrk-$1.txt"
}

for target in direct edge proxy; do
    case $target in direct) url=$DIRECT ;; edge) url=$EDGE ;; proxy) url=$PROXY ;; esac
    echo "== warm-up and run: $target" >&2
    run_wrk "warm-$target" "$url" 2
    run_wrk "$target" "$url" "$DURATION"
done

kill -TERM "$EDGE_PID"
wait "$EDGE_PID" 2>/dev/null || true

ratio() { awk "BEGIN{printf \"%.2f\", $1/$2}"; }
printf '\nmachine: %s cores; wrk -t%s -c%s -d%ss; 100-byte file; HTTP/1.1 keep-alive\n' \
    "$(nproc)" "$THREADS" "$CONNECTIONS" "$DURATION"
printf '%-28s %12s %10s %8s\n' "" "req/s" "p99" "errors"
printf '%-28s %12s %10s %8s\n' "upstream directly" "$(rate direct)" "$(p99 direct)" "$(errors direct)"
printf '%-28s %12s %10s %8s\n' "through cantila's edge" "$(rate edge)" "$(p99 edge)" "$(errors edge)"
printf '%-28s %12s %10s %8s\n' "through nginx proxy" "$(rate proxy)" "$(p99 proxy)" "$(errors proxy)"
printf 'ratio edge/direct:  %s\n' "$(ratio "$(rate edge)" "$(rate direct)")"
printf 'ratio nginx/direct: %s\n' "$(ratio "$(rate proxy)" "$(rate direct)")"
printf 'ratio edge/nginx:   %s\n' "$(ratio "$(rate edge)" "$(rate proxy)")"
printf "edge's own counters: %s\n" "$(tail -n1 "$WORK/edge.err")"
