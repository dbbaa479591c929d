#!/usr/bin/env bash
# Edge benchmark against the real daemon with its defaults (access log and metrics on):
# `cantila serve --base-domain bench.test` deploys a fast upstream, nginx in a container of
# size `large` (the host's own nginx binary copied into debian:bookworm-slim: no registry
# is reachable to pull an image) serving a 100-byte and a 1 MiB file on 8080. Beside it,
# the host's nginx as a reverse proxy configured as a user would (`worker_processes auto`,
# an upstream keep-alive pool, the same forwarding headers and a request id) proxies the
# same container. Every case measures Cantila's edge and that nginx interleaved, round
# after round, and reports medians over the rounds of req/s, p50 and p99, CPU time per
# request of each proxy (utime + stime from /proc over the run; nginx's master and its
# workers), and the ratios edge/nginx.
#
# Cases: plain HTTP/1.1 at 50 and at 200 connections (100 bytes), 1 MiB at 50; HTTPS
# HTTP/1.1 (wrk) at 50 and 200; HTTPS HTTP/2 (h2load -m10) at 50 and 200. Then the API's
# p99 (`GET /v1/projects`, wrk -c4) while quiet and while the edge is saturated (wrk
# -c200 on the edge at the same time), interleaved.
#
# Two daemon runs on the same data dir, serving the same container (instances outlive a
# daemon restart): once a hostname has a certificate the edge answers plain HTTP with a
# 308 to https, and in self-signed mode every served hostname gets one at once. So HTTP
# is measured with tls.mode = "off", then the daemon restarts with "self-signed" for HTTPS.
# wrk sends the URL's host as SNI, so the HTTPS runs use https://app.admin.bench.test:PORT/
# resolved to 127.0.0.1 by a private /etc/hosts in a throwaway mount namespace
# (`unshare -m`, needs root); h2load gets --connect-to instead.
#
#   scripts/bench/edge.sh [--duration 6] [--rounds 5] [--only http|https|api]...
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=6
ROUNDS=5
ONLY=()
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --only) ONLY+=("$2"); shift 2 ;;
        *) echo "usage: $0 [--duration S] [--rounds R] [--only http|https|api]..." >&2; exit 2 ;;
    esac
done
wanted() { [ ${#ONLY[@]} -eq 0 ] || printf '%s\n' "${ONLY[@]}" | grep -qx "$1"; }

. scripts/bench/lib.sh
bench_need wrk wrk
bench_need h2load nghttp2-client
bench_need nginx nginx
bench_need curl curl
bench_need openssl openssl
bench_need git git
bench_need python3 python3
bench_need_engine
docker image inspect debian:bookworm-slim >/dev/null 2>&1 || { echo "needs debian:bookworm-slim (scripts/base-images.sh)" >&2; exit 1; }
bench_build
bench_workdir

NGINX_HTTP_PORT=$(free_port)
NGINX_HTTPS_PORT=$(free_port)
BASE_DOMAIN=bench.test
HOST=app.admin.$BASE_DOMAIN
CLK_TCK=$(getconf CLK_TCK)

# ---- The upstream: nginx in a container, its binary and libraries from the host.
APP=$WORK/app
mkdir -p "$APP/www" "$APP/rootfs/usr/local/lib"
head -c 99 /dev/zero | tr '\0' 'x' >"$APP/www/index.html"
echo >>"$APP/www/index.html"
head -c 1048576 /dev/urandom >"$APP/www/big.bin"
cp -L "$(command -v nginx)" "$APP/rootfs/nginx"
ldd "$(command -v nginx)" | awk '/=> \// {print $3}' | while read -r lib; do cp -L "$lib" "$APP/rootfs/usr/local/lib/"; done
cat >"$APP/nginx.conf" <<'CONF'
worker_processes 2;
daemon off;
user root;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    sendfile on;
    server { listen 8080; root /www; }
}
CONF
cat >"$APP/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
COPY rootfs/usr/local/lib/ /usr/local/lib/
COPY rootfs/nginx /usr/local/bin/nginx
COPY nginx.conf /etc/bench-nginx.conf
COPY www /www
ENV LD_LIBRARY_PATH=/usr/local/lib
EXPOSE 8080
CMD ["/usr/local/bin/nginx", "-c", "/etc/bench-nginx.conf", "-p", "/tmp"]
DOCKERFILE
git -C "$APP" init -q -b main
git -C "$APP" add -A
bench_git "$APP" commit -q -m bench

start_daemon() { # tls mode; sets CANTILA_PID, EDGE_HTTP_PORT, EDGE_HTTPS_PORT, API_URL
    local api_port
    api_port=$(free_port)
    EDGE_HTTP_PORT=$(free_port)
    EDGE_HTTPS_PORT=$(free_port)
    printf '[tls]\nmode = "%s"\n[scale]\ndefault_size = "large"\n' "$1" >"$WORK/cantila-$1.toml"
    "$BIN" serve --config "$WORK/cantila-$1.toml" --data-dir "$WORK/data" --base-domain "$BASE_DOMAIN" \
        --api-listen "127.0.0.1:$api_port" --http-listen "127.0.0.1:$EDGE_HTTP_PORT" \
        --https-listen "127.0.0.1:$EDGE_HTTPS_PORT" >"$WORK/cantila-$1.log" 2>&1 &
    CANTILA_PID=$!
    PIDS+=("$CANTILA_PID")
    API_URL="http://127.0.0.1:$api_port"
    bench_wait_api "$API_URL" "$WORK/data"
}

# Every path must answer 200 with the file's bytes before anything is measured (wrk
# counts a 3xx as a success, so a redirect would otherwise pass for a fast answer).
check() { # name file curl-args...
    local name=$1 file=$2; shift 2
    for _ in $(seq 1 100); do
        if [ "$(curl -s -o "$WORK/check.body" -w '%{http_code}' "$@" || true)" = 200 ] \
            && cmp -s "$WORK/check.body" "$file"; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name does not answer 200 with $file: curl $*" >&2
    tail -n 20 "$WORK"/cantila-*.log "$WORK/nginx-error.log" >&2 || true
    exit 1
}

# CPU ticks (utime + stime) of a process and its children processes (nginx's workers).
cpu_ticks() {
    local total=0 pid
    for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
proxy_pid() { case "$1" in edge) echo "$CANTILA_PID" ;; nginx) echo "$NGINX_PID" ;; direct) echo "" ;; esac; }

# One run: writes $WORK/res/<case>.<proxy>.r<round> as "rps p50_ms p99_ms cpu_us_per_req errors".
run_one() { # case proxy round tool conns url [extra...]
    local case=$1 proxy=$2 round=$3 tool=$4 conns=$5 url=$6; shift 6
    local out=$WORK/raw/$case.$proxy.r$round pid before after
    pid=$(proxy_pid "$proxy")
    before=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
    case $tool in
        wrk)
            "$@" wrk -t1 -c"$conns" -d"${DURATION}s" --latency -H "Host: $HOST" "$url" >"$out" 2>&1 || true ;;
        h2load)
            rm -f "$out.log"
            h2load -t1 -c"$conns" -m10 -D"$DURATION" --log-file="$out.log" "$@" "$url" >"$out" 2>&1 || true ;;
    esac
    after=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
    python3 - "$tool" "$out" "$((after - before))" "$CLK_TCK" >"$WORK/res/$case.$proxy.r$round" <<'PY'
import re, sys
tool, path, ticks, clk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
text = open(path).read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n if unit == "ms" else n * 1000 if unit == "s" else n * 60000
if tool == "wrk":
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
else:
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    total, errors = int(m.group(3)), int(m.group(4)) + int(m.group(5))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    errors += int(codes.group(3)) + int(codes.group(4))
    lat = sorted(int(line.split("\t")[2]) for line in open(path + ".log") if line.strip())
    p50, p99 = lat[len(lat) // 2] / 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000
cpu_us = ticks * 1e6 / clk / total if total else 0
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {cpu_us:.1f} {errors}")
PY
    [ -s "$WORK/res/$case.$proxy.r$round" ] || { echo "no result for $case $proxy:" >&2; cat "$out" >&2; exit 1; }
    echo "   $case $proxy r$round: $(cat "$WORK/res/$case.$proxy.r$round")" >&2
}
mkdir -p "$WORK/raw" "$WORK/res"

# Medians over the rounds of one case and proxy: "rps p50 p99 cpu errors(sum)".
summary() { # case proxy
    python3 - "$WORK/res" "$1" "$2" <<'PY'
import glob, statistics, sys
rows = [list(map(float, open(f).read().split())) for f in sorted(glob.glob(f"{sys.argv[1]}/{sys.argv[2]}.{sys.argv[3]}.r*"))]
if not rows:
    print("- - - - -"); sys.exit()
med = [statistics.median(r[i] for r in rows) for i in range(4)]
print(f"{med[0]:.0f} {med[1]:.2f} {med[2]:.2f} {med[3]:.1f} {sum(r[4] for r in rows):.0f}")
PY
}

# ---- Run 1: tls.mode = "off"; deploy, then plain HTTP.
start_daemon off
CANTILA_TOKEN=$(cat "$WORK/data/admin-token")
export CANTILA_TOKEN CANTILA_URL=$API_URL
PROJECT_ID=$("$BIN" projects create app --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect app "$APP" --branch main >/dev/null
echo "== deploying the upstream (project $PROJECT_ID)" >&2
timeout 300 "$BIN" deploy app --follow >"$WORK/deploy.log" 2>&1 || { tail -n 20 "$WORK/deploy.log" >&2; exit 1; }
CONTAINER=$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" --filter label=cantila.kind=web)
[ "$(echo "$CONTAINER" | wc -w)" -eq 1 ] || { echo "expected one running instance, got: $CONTAINER" >&2; exit 1; }
APP_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$CONTAINER" | awk '{print $1}')
CPUS=$(docker inspect -f '{{.HostConfig.NanoCpus}}' "$CONTAINER" | awk '{printf "%g", $1 / 1e9}')

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
    -keyout "$WORK/nginx.key" -out "$WORK/nginx.pem" 2>/dev/null
cat >"$WORK/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 8192; }
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
        listen 127.0.0.1:$NGINX_HTTPS_PORT ssl http2;
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
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id;
        }
    }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

check direct "$APP/www/index.html" "http://$APP_IP:8080/"
check edge-http "$APP/www/index.html" -H "Host: $HOST" "http://127.0.0.1:$EDGE_HTTP_PORT/"
check edge-http-1m "$APP/www/big.bin" -H "Host: $HOST" "http://127.0.0.1:$EDGE_HTTP_PORT/big.bin"
check nginx-http "$APP/www/index.html" -H "Host: $HOST" "http://127.0.0.1:$NGINX_HTTP_PORT/"

EDGE_H=http://127.0.0.1:$EDGE_HTTP_PORT
NGINX_H=http://127.0.0.1:$NGINX_HTTP_PORT
if wanted http; then
    run_one warm edge 0 wrk 50 "$EDGE_H/"
    run_one warm nginx 0 wrk 50 "$NGINX_H/"
    for round in $(seq 1 "$ROUNDS"); do
        echo "== HTTP round $round/$ROUNDS" >&2
        run_one http-c50 direct "$round" wrk 50 "http://$APP_IP:8080/"
        run_one http-c50 edge "$round" wrk 50 "$EDGE_H/"
        run_one http-c50 nginx "$round" wrk 50 "$NGINX_H/"
        run_one http-c200 nginx "$round" wrk 200 "$NGINX_H/"
        run_one http-c200 edge "$round" wrk 200 "$EDGE_H/"
        run_one http-1m-c50 edge "$round" wrk 50 "$EDGE_H/big.bin"
        run_one http-1m-c50 nginx "$round" wrk 50 "$NGINX_H/big.bin"
    done
fi

# The API's p99 quiet and while wrk -c200 saturates the edge (started just before).
api_run() { # name round
    "$BIN" projects list >/dev/null
    wrk -t1 -c4 -d"${DURATION}s" --latency -H "Authorization: Bearer $CANTILA_TOKEN" "$API_URL/v1/projects" >"$WORK/raw/$1.r$2" 2>&1 || true
    python3 - "$WORK/raw/$1.r$2" >"$WORK/res/$1.api.r$2" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); n, u = float(m.group(1)), m.group(2)
    return n / 1000 if u == "us" else n if u == "ms" else n * 1000
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
print(f"{rps:.0f} {p50:.2f} {p99:.2f} 0 0")
PY
    echo "   $1 r$2: $(cat "$WORK/res/$1.api.r$2")" >&2
}
if wanted api; then
    for round in $(seq 1 "$ROUNDS"); do
        echo "== API round $round/$ROUNDS" >&2
        api_run api-quiet "$round"
        wrk -t1 -c200 -d"$((DURATION + 2))s" -H "Host: $HOST" "$EDGE_H/" >"$WORK/raw/load.r$round" 2>&1 &
        LOAD=$!
        sleep 1
        api_run api-loaded "$round"
        wait "$LOAD" || true
    done
fi
RSS_HTTP=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$CANTILA_PID/status")

# ---- Run 2: the daemon restarts with tls.mode = "self-signed"; same data dir, same container.
if wanted https; then
    kill -TERM "$CANTILA_PID"
    wait "$CANTILA_PID" 2>/dev/null || true
    start_daemon self-signed
    CA=$WORK/data/certs/local-ca/ca.pem
    check edge-https "$APP/www/index.html" --cacert "$CA" --resolve "$HOST:$EDGE_HTTPS_PORT:127.0.0.1" "https://$HOST:$EDGE_HTTPS_PORT/"
    check nginx-https "$APP/www/index.html" --cacert "$WORK/nginx.pem" --resolve "$HOST:$NGINX_HTTPS_PORT:127.0.0.1" "https://$HOST:$NGINX_HTTPS_PORT/"
    { cat /etc/hosts; echo "127.0.0.1 $HOST"; } >"$WORK/hosts"
    printf '#!/bin/sh\nmount --bind "$HOSTS_FILE" /etc/hosts && exec "$@"\n' >"$WORK/with-hosts.sh"
    chmod +x "$WORK/with-hosts.sh"
    WRAP=(env "HOSTS_FILE=$WORK/hosts" unshare -m "$WORK/with-hosts.sh")
    EDGE_S=https://$HOST:$EDGE_HTTPS_PORT
    NGINX_S=https://$HOST:$NGINX_HTTPS_PORT
    run_one warm edge 0 wrk 50 "$EDGE_S/" "${WRAP[@]}"
    run_one warm nginx 0 wrk 50 "$NGINX_S/" "${WRAP[@]}"
    for round in $(seq 1 "$ROUNDS"); do
        echo "== HTTPS round $round/$ROUNDS" >&2
        run_one https-h1-c50 edge "$round" wrk 50 "$EDGE_S/" "${WRAP[@]}"
        run_one https-h1-c50 nginx "$round" wrk 50 "$NGINX_S/" "${WRAP[@]}"
        run_one https-h1-c200 nginx "$round" wrk 200 "$NGINX_S/" "${WRAP[@]}"
        run_one https-h1-c200 edge "$round" wrk 200 "$EDGE_S/" "${WRAP[@]}"
        run_one https-h2-c50 edge "$round" h2load 50 "$EDGE_S/" --connect-to="127.0.0.1:$EDGE_HTTPS_PORT"
        run_one https-h2-c50 nginx "$round" h2load 50 "$NGINX_S/" --connect-to="127.0.0.1:$NGINX_HTTPS_PORT"
        run_one https-h2-c200 nginx "$round" h2load 200 "$NGINX_S/" --connect-to="127.0.0.1:$NGINX_HTTPS_PORT"
        run_one https-h2-c200 edge "$round" h2load 200 "$EDGE_S/" --connect-to="127.0.0.1:$EDGE_HTTPS_PORT"
    done
fi

printf '\nmachine: %s cores; %s s per run, medians of %s interleaved rounds; upstream: nginx in a container (%s CPUs) at %s:8080\n' \
    "$(nproc)" "$DURATION" "$ROUNDS" "$CPUS" "$APP_IP"
printf 'wrk -t1 (HTTP/1.1), h2load -t1 -m10 (HTTP/2); CPU = the proxy'"'"'s own CPU time per request\n\n'
printf '| case | cantila req/s | nginx req/s | ratio | cantila p50/p99 ms | nginx p50/p99 ms | cantila CPU µs/req | nginx CPU µs/req | errors c/n |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for case in http-c50 http-c200 http-1m-c50 https-h1-c50 https-h1-c200 https-h2-c50 https-h2-c200; do
    read -r e_rps e_p50 e_p99 e_cpu e_err < <(summary "$case" edge)
    read -r n_rps n_p50 n_p99 n_cpu n_err < <(summary "$case" nginx)
    [ "$e_rps" = - ] && continue
    printf '| %s | %s | %s | %s | %s / %s | %s / %s | %s | %s | %s/%s |\n' "$case" "$e_rps" "$n_rps" \
        "$(awk "BEGIN{printf \"%.2f\", $e_rps/$n_rps}")" "$e_p50" "$e_p99" "$n_p50" "$n_p99" "$e_cpu" "$n_cpu" "$e_err" "$n_err"
done
if [ -n "$(ls "$WORK/res" | grep direct || true)" ]; then
    read -r d_rps d_p50 d_p99 _ _ < <(summary http-c50 direct)
    printf '\ncontainer directly (HTTP c50): %s req/s, p50/p99 %s / %s ms\n' "$d_rps" "$d_p50" "$d_p99"
fi
if wanted api; then
    read -r q_rps q_p50 q_p99 _ _ < <(summary api-quiet api)
    read -r l_rps l_p50 l_p99 _ _ < <(summary api-loaded api)
    printf 'API GET /v1/projects (wrk -c4): quiet p50/p99 %s / %s ms (%s req/s); edge saturated (wrk -c200) %s / %s ms (%s req/s); loaded/quiet p99 %s\n' \
        "$q_p50" "$q_p99" "$q_rps" "$l_p50" "$l_p99" "$l_rps" "$(awk "BEGIN{printf \"%.2f\", $l_p99/$q_p99}")"
fi
printf 'cantila RSS after the HTTP runs: %s MiB\n' "$RSS_HTTP"
grep -h -E ' (WARN|ERROR) ' "$WORK"/cantila-*.log | sed -E 's/^[^ ]+ +//; s/(req|dep)_[A-Za-z0-9]+/\1_*/g' \
    | cut -c1-160 | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/  cantila log: /' || true
