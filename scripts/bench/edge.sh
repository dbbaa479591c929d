#!/usr/bin/env bash
# Edge benchmark against the real daemon: `cantila serve --base-domain bench.test` deploys
# a busybox httpd app (a 100-byte index.html on 8080) from a local git repo; then, in one
# run, wrk measures the same container five ways:
#   (a) directly on its bridge IP:8080,
#   (b) through Cantila's edge over HTTP,
#   (c) through nginx as a reverse proxy over HTTP,
#   (d) through Cantila's edge over HTTPS (tls.mode = "self-signed"),
#   (e) through nginx terminating TLS (a self-signed EC P-256 certificate, the key type of
#       the local CA's leaves) and proxying over HTTP.
# Both proxies keep a keep-alive pool to the app and set the same forwarding headers
# (busybox httpd closes every connection, so each proxied request opens one anyway).
# Reports requests/s and p99 of each and the ratios edge/direct, nginx/direct and
# edge/nginx for HTTP and for HTTPS. Loopback and the Docker bridge only; stops by itself.
#
# Two daemon runs on the same data dir, serving the same container (instances outlive a
# daemon restart): once a hostname has a certificate the edge answers plain HTTP with a
# 308 to https, and in self-signed mode every served hostname gets one at once (and keeps
# it on disk). So HTTP is measured first with tls.mode = "off", then the daemon restarts
# with tls.mode = "self-signed" for HTTPS; the script checks and prints the 308.
#
# wrk sends the URL's host as SNI, and rustls ignores an IP address there, so the edge has
# no certificate to offer for https://127.0.0.1:PORT/ (checked at run time with openssl
# s_client). Then both HTTPS runs use https://app.admin.bench.test:PORT/, the name
# resolved to 127.0.0.1 by a private /etc/hosts bind-mounted in a throwaway mount
# namespace (`unshare -m`, needs root): the machine's /etc/hosts is not touched.
#
# With --rounds R the five runs are interleaved R times (HTTP ones in the first daemon run,
# HTTPS ones in the second) and each row shows the median req/s and p99 over the rounds,
# with the req/s range: on a shared or virtualised machine one run can be off by a lot.
#
#   scripts/bench/edge.sh [--duration 10] [--connections 50] [--threads 1] [--rounds 1]
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=10
CONNECTIONS=50
THREADS=1
ROUNDS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        *) echo "usage: $0 [--duration S] [--connections N] [--threads N] [--rounds R]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need wrk wrk
bench_need nginx nginx
bench_need curl curl
bench_need openssl openssl
bench_need git git
bench_need python3 python3
bench_need_engine
bench_build
bench_workdir

NGINX_HTTP_PORT=$(free_port)
NGINX_HTTPS_PORT=$(free_port)
BASE_DOMAIN=bench.test
HOST=app.admin.$BASE_DOMAIN

# The app: busybox httpd serving a 100-byte index.html on 8080.
mkdir -p "$WORK/app/www"
head -c 99 /dev/zero | tr '\0' 'x' >"$WORK/app/www/index.html"
echo >>"$WORK/app/www/index.html"
bench_busybox_app "$WORK/app"

start_daemon() { # tls mode; sets CANTILA_PID, EDGE_HTTP_PORT, EDGE_HTTPS_PORT, CANTILA_URL
    local api_port
    api_port=$(free_port)
    EDGE_HTTP_PORT=$(free_port)
    EDGE_HTTPS_PORT=$(free_port)
    printf '[tls]\nmode = "%s"\n' "$1" >"$WORK/cantila-$1.toml"
    "$BIN" serve --config "$WORK/cantila-$1.toml" --data-dir "$WORK/data" --base-domain "$BASE_DOMAIN" \
        --api-listen "127.0.0.1:$api_port" --http-listen "127.0.0.1:$EDGE_HTTP_PORT" \
        --https-listen "127.0.0.1:$EDGE_HTTPS_PORT" >"$WORK/cantila-$1.log" 2>&1 &
    CANTILA_PID=$!
    PIDS+=("$CANTILA_PID")
    bench_wait_api "http://127.0.0.1:$api_port" "$WORK/data"
}
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$CANTILA_PID/status"; }

# Every path must answer 200 with the app's 100 bytes before anything is measured (wrk
# counts a 3xx as a success, so a redirect would otherwise pass for a fast answer).
check() { # name, curl args...
    local name=$1; shift
    for _ in $(seq 1 100); do
        if [ "$(curl -s -o "$WORK/check.body" -w '%{http_code}' "$@" || true)" = 200 ] \
            && cmp -s "$WORK/check.body" "$WORK/app/www/index.html"; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name does not answer 200 with the app's file: curl $*" >&2
    tail -n 20 "$WORK"/cantila-*.log "$WORK/nginx-error.log" >&2 || true
    exit 1
}
run_wrk() { # name url duration [wrapper...]
    local name=$1 url=$2 duration=$3; shift 3
    "$@" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${duration}s" --latency -H "Host: $HOST" "$url" >"$WORK/wrk-$name.txt" 2>&1 || true
}
median() { sort -n | awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
rates() { cat "$WORK/wrk-$1".r*.txt | awk '/Requests\/sec/ {print $2}'; }
rate() { rates "$1" | median; }
rate_range() { rates "$1" | sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.0f-%.0f", lo, hi}'; }
p99() { # median over the rounds, in ms
    cat "$WORK/wrk-$1".r*.txt | awk '/ 99%/ {v = $2
        if (v ~ /us$/) {sub(/us$/, "", v); v /= 1000} else if (v ~ /ms$/) {sub(/ms$/, "", v)}
        else if (v ~ /s$/) {sub(/s$/, "", v); v *= 1000} else if (v ~ /m$/) {sub(/m$/, "", v); v *= 60000}
        print v}' | median | awk '{printf "%.1fms", $1}'
}
errors() { # non-2xx/3xx responses plus socket errors (connect, read, write, timeout), all rounds
    cat "$WORK/wrk-$1".r*.txt | awk '/Non-2xx/ {n += $5} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}'
}
error_detail() {
    cat "$WORK/wrk-$1".r*.txt | awk '/Non-2xx/ {x += $5} /Socket errors/ {gsub(",", ""); c += $4; r += $6; w += $8; t += $10}
        END {printf "non-2xx/3xx %d, connect %d, read %d, write %d, timeout %d", x, c, r, w, t}'
}
measure() { # name round url [wrapper...]
    local name=$1 round=$2 url=$3; shift 3
    if [ "$round" -eq 1 ]; then
        echo "== warm-up: $name ($url)" >&2
        run_wrk "warm-$name" "$url" 2 "$@"
    fi
    echo "== round $round/$ROUNDS: $name" >&2
    run_wrk "$name.r$round" "$url" "$DURATION" "$@"
    grep -q 'Requests/sec' "$WORK/wrk-$name.r$round.txt" || { echo "wrk failed on $name:" >&2; cat "$WORK/wrk-$name.r$round.txt" >&2; exit 1; }
}

# ---- Run 1: tls.mode = "off"; deploy, then HTTP direct / edge / nginx.
start_daemon off
CANTILA_TOKEN=$(cat "$WORK/data/admin-token")
export CANTILA_TOKEN
PROJECT_ID=$("$BIN" projects create app --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect app "$WORK/app" --branch main >/dev/null
echo "== deploying the app (project $PROJECT_ID)" >&2
timeout 300 "$BIN" deploy app --follow >"$WORK/deploy.log" 2>&1 || { tail -n 20 "$WORK/deploy.log" >&2; exit 1; }

CONTAINER=$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" --filter label=cantila.kind=web)
[ "$(echo "$CONTAINER" | wc -w)" -eq 1 ] || { echo "expected one running instance, got: $CONTAINER" >&2; exit 1; }
APP_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$CONTAINER" | awk '{print $1}')
[ -n "$APP_IP" ] || { echo "no IP for container $CONTAINER" >&2; exit 1; }

# nginx: HTTP and HTTPS servers proxying to the container, a keep-alive pool and the same
# headers the edge sets, as many workers as cores (the edge's tokio runtime uses every core).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
    -keyout "$WORK/nginx.key" -out "$WORK/nginx.pem" 2>/dev/null
cat >"$WORK/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    upstream app {
        server $APP_IP:8080;
        keepalive 256;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$NGINX_HTTP_PORT;
        listen 127.0.0.1:$NGINX_HTTPS_PORT ssl;
        ssl_certificate $WORK/nginx.pem;
        ssl_certificate_key $WORK/nginx.key;
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
nginx -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=("$!")

check direct "http://$APP_IP:8080/"
check edge-http -H "Host: $HOST" "http://127.0.0.1:$EDGE_HTTP_PORT/"
check nginx-http -H "Host: $HOST" "http://127.0.0.1:$NGINX_HTTP_PORT/"
check nginx-https --cacert "$WORK/nginx.pem" --resolve "$HOST:$NGINX_HTTPS_PORT:127.0.0.1" "https://$HOST:$NGINX_HTTPS_PORT/"

for round in $(seq 1 "$ROUNDS"); do
    measure direct "$round" "http://$APP_IP:8080/"
    measure edge-http "$round" "http://127.0.0.1:$EDGE_HTTP_PORT/"
    measure nginx-http "$round" "http://127.0.0.1:$NGINX_HTTP_PORT/"
done
RSS_HTTP=$(rss_mib)

# ---- Run 2: the daemon restarts with tls.mode = "self-signed"; same data dir, same container.
kill -TERM "$CANTILA_PID"
wait "$CANTILA_PID" 2>/dev/null || true
start_daemon self-signed
CA=$WORK/data/certs/local-ca/ca.pem
check edge-https --cacert "$CA" --resolve "$HOST:$EDGE_HTTPS_PORT:127.0.0.1" "https://$HOST:$EDGE_HTTPS_PORT/"
[ "$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" --filter label=cantila.kind=web)" = "$CONTAINER" ] \
    || { echo "the instance changed across the restart" >&2; exit 1; }
HTTP_ANSWER=none
for _ in $(seq 1 50); do
    HTTP_ANSWER=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H "Host: $HOST" "http://127.0.0.1:$EDGE_HTTP_PORT/" || true)
    case $HTTP_ANSWER in 3*) break ;; esac
    sleep 0.1
done

# Does the edge complete a handshake whose SNI is the literal 127.0.0.1 (what wrk sends
# for https://127.0.0.1:PORT/)? One handshake with openssl, the same client library.
HTTPS_WRAP=()
if timeout 10 openssl s_client -connect "127.0.0.1:$EDGE_HTTPS_PORT" -servername 127.0.0.1 </dev/null 2>&1 \
    | grep -q '^Server certificate'; then
    SNI_MODE="https://127.0.0.1:PORT/ (the edge accepts SNI 127.0.0.1)"
    EDGE_HTTPS="https://127.0.0.1:$EDGE_HTTPS_PORT/"
    NGINX_HTTPS="https://127.0.0.1:$NGINX_HTTPS_PORT/"
else
    SNI_MODE="https://$HOST:PORT/ via a private /etc/hosts (unshare -m): the edge refuses SNI 127.0.0.1"
    { cat /etc/hosts; echo "127.0.0.1 $HOST"; } >"$WORK/hosts"
    printf '#!/bin/sh\n# Runs "$@" with $HOSTS_FILE over /etc/hosts, in the caller'"'"'s new mount namespace.\nmount --bind "$HOSTS_FILE" /etc/hosts && exec "$@"\n' >"$WORK/with-hosts.sh"
    chmod +x "$WORK/with-hosts.sh"
    HTTPS_WRAP=(env "HOSTS_FILE=$WORK/hosts" unshare -m "$WORK/with-hosts.sh")
    EDGE_HTTPS="https://$HOST:$EDGE_HTTPS_PORT/"
    NGINX_HTTPS="https://$HOST:$NGINX_HTTPS_PORT/"
fi
for round in $(seq 1 "$ROUNDS"); do
    measure edge-https "$round" "$EDGE_HTTPS" "${HTTPS_WRAP[@]}"
    measure nginx-https "$round" "$NGINX_HTTPS" "${HTTPS_WRAP[@]}"
done
RSS_HTTPS=$(rss_mib)

ratio() { awk "BEGIN{printf \"%.2f\", $1/$2}"; }
printf '\nmachine: %s cores; wrk -t%s -c%s -d%ss x %s round(s); busybox httpd (no keep-alive), 100-byte file at %s:8080\n' \
    "$(nproc)" "$THREADS" "$CONNECTIONS" "$DURATION" "$ROUNDS" "$APP_IP"
printf 'https URL: %s\n' "$SNI_MODE"
printf 'plain HTTP on the self-signed daemon answers: %s\n' "$HTTP_ANSWER"
printf '%-26s %10s %13s %10s %7s\n' "" "req/s" "(range)" "p99" "errors"
row() { printf '%-26s %10.0f %13s %10s %7s\n' "$1" "$(rate "$2")" "($(rate_range "$2"))" "$(p99 "$2")" "$(errors "$2")"; }
row "(a) container directly" direct
row "(b) cantila edge, HTTP" edge-http
row "(c) nginx proxy, HTTP" nginx-http
row "(d) cantila edge, HTTPS" edge-https
row "(e) nginx proxy, HTTPS" nginx-https
for name in direct edge-http nginx-http edge-https nginx-https; do
    if [ "$(errors "$name")" -gt 0 ]; then
        printf '  %s errors: %s\n' "$name" "$(error_detail "$name")"
    fi
done
printf 'HTTP   edge/direct %s   nginx/direct %s   edge/nginx %s\n' \
    "$(ratio "$(rate edge-http)" "$(rate direct)")" "$(ratio "$(rate nginx-http)" "$(rate direct)")" \
    "$(ratio "$(rate edge-http)" "$(rate nginx-http)")"
printf 'HTTPS  edge/direct %s   nginx/direct %s   edge/nginx %s\n' \
    "$(ratio "$(rate edge-https)" "$(rate direct)")" "$(ratio "$(rate nginx-https)" "$(rate direct)")" \
    "$(ratio "$(rate edge-https)" "$(rate nginx-https)")"
# What the daemon logged at WARN/ERROR during the runs (rustls warns once per handshake with
# an IP address as SNI: only the probe sends one).
grep -h -E ' (WARN|ERROR) ' "$WORK"/cantila-*.log | sed -E 's/^[^ ]+ +//; s/(req|dep)_[A-Za-z0-9]+/\1_*/g' \
    | cut -c1-160 | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/  cantila log: /' || true
printf 'cantila RSS: %s MiB after the HTTP runs (tls off), %s MiB after the HTTPS runs (self-signed)\n' \
    "$RSS_HTTP" "$RSS_HTTPS"
