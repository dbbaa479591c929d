#!/usr/bin/env bash
# Static-site benchmark: the real daemon (`cantila serve`, defaults: access log and
# metrics on) publishes a static site from a local git repo (a 100-byte file and a 1 MiB
# file beside its index.html); nginx (`worker_processes auto`, `sendfile on`, as Debian's
# default configuration has it) serves the very same published directory. Both are
# measured interleaved, round after round, over:
#   plain HTTP/1.1 (wrk), HTTPS HTTP/1.1 (wrk), HTTPS HTTP/2 (h2load -m10),
# for each file size. Each row is the median of the rounds: req/s, p50 and p99, and the
# CPU each server spent per request (its processes' utime+stime from /proc/PID/stat over
# the run: the daemon; nginx's master and workers), then Cantila/nginx ratios.
#
# Two daemon runs on one data dir, as in edge.sh: once a hostname has a certificate the
# edge answers plain HTTP with a 308, and in self-signed mode every hostname gets one at
# once; so HTTP is measured with tls.mode = "off", then the daemon restarts with
# tls.mode = "self-signed" for HTTPS. HTTPS clients reach https://<site host>:PORT/
# through a private /etc/hosts bind-mounted in a throwaway mount namespace (`unshare -m`,
# needs root), so the SNI is the site's name and the machine's /etc/hosts is untouched.
# h2load prints no percentiles: they come from its per-request log (--log-file).
#
#   scripts/bench/edge-static.sh [--duration 5] [--connections 50] [--rounds 5] [--threads 1]
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=5
CONNECTIONS=50
ROUNDS=5
THREADS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        *) echo "usage: $0 [--duration S] [--connections N] [--rounds R] [--threads N]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need wrk wrk
bench_need h2load nghttp2-client
bench_need nginx nginx
bench_need curl curl
bench_need openssl openssl
bench_need git git
bench_need python3 python3
bench_build
bench_workdir

BASE_DOMAIN=bench.test
HOST=site.admin.$BASE_DOMAIN
NGINX_HTTP_PORT=$(free_port)
NGINX_HTTPS_PORT=$(free_port)
TICKS=$(getconf CLK_TCK)

# The site: index.html, a 100-byte file and 1 MiB of random bytes (nothing to compress;
# neither client asks for compression anyway).
mkdir -p "$WORK/site"
echo "<h1>static</h1>" >"$WORK/site/index.html"
head -c 99 /dev/zero | tr '\0' 'x' >"$WORK/site/small.html"
echo >>"$WORK/site/small.html"
head -c 1048576 /dev/urandom >"$WORK/site/big.bin"
git -C "$WORK/site" init -q -b main
git -C "$WORK/site" add -A
bench_git "$WORK/site" commit -q -m site

start_daemon() { # tls mode; sets CANTILA_PID, EDGE_HTTP_PORT, EDGE_HTTPS_PORT
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

# `cpu_ticks PID...`: utime + stime of the processes, in clock ticks.
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + $(echo "$fields" | awk '{print $12 + $13}')))
    done
    echo "$total"
}
nginx_pids() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true); }
server_pids() { # server
    case $1 in
        cantila) echo "$CANTILA_PID" ;;
        nginx) nginx_pids ;;
    esac
}

# Each path must answer 200 with the published file before anything is measured.
check() { # name file curl args...
    local name=$1 file=$2; shift 2
    for _ in $(seq 1 100); do
        if [ "$(curl -s -o "$WORK/check.body" -w '%{http_code}' "$@" || true)" = 200 ] \
            && cmp -s "$WORK/check.body" "$WORK/site/$file"; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name does not answer 200 with $file: curl $*" >&2
    tail -n 20 "$WORK"/cantila-*.log "$WORK/nginx-error.log" >&2 || true
    exit 1
}

# `run NAME SERVER TOOL URL`: one measured run; writes $WORK/NAME.txt (the tool's output),
# NAME.cpu (CPU ticks of the server over the run) and, for h2load, NAME.log.
run() {
    local name=$1 server=$2 tool=$3 url=$4 before after
    # shellcheck disable=SC2046
    before=$(cpu_ticks $(server_pids "$server"))
    case $tool in
        wrk) "${WRAP[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" >"$WORK/$name.txt" 2>&1 || true ;;
        h2load) "${WRAP[@]}" h2load -c"$CONNECTIONS" -m10 -t"$THREADS" -D"$DURATION" --log-file="$WORK/$name.log" "$url" >"$WORK/$name.txt" 2>&1 || true ;;
    esac
    # shellcheck disable=SC2046
    after=$(cpu_ticks $(server_pids "$server"))
    echo $((after - before)) >"$WORK/$name.cpu"
}

# Figures of one run: requests, req/s, p50 and p99 in ms, errors.
figures() { # name tool
    local name=$1 tool=$2
    case $tool in
        wrk) awk -v d="$DURATION" '
            function ms(v) { if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 } if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
                             if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000 } return v }
            / requests in / {n = $1} /Requests\/sec/ {r = $2} / 50%/ {p50 = ms($2)} / 99%/ {p99 = ms($2)}
            /Non-2xx/ {e += $5} /Socket errors/ {gsub(",", ""); e += $4 + $6 + $8 + $10}
            END {printf "%d %.0f %.3f %.3f %d\n", n, r, p50, p99, e}' "$WORK/$name.txt" ;;
        h2load) {
            awk '/^requests:/ {n = $8; e = $10 + $12} /^finished in/ {gsub(",", ""); r = $4} END {printf "%d %.0f ", n, r}' "$WORK/$name.txt"
            # The log's columns: start (us since the epoch), status, duration (us).
            awk '{print $3 / 1000}' "$WORK/$name.log" | sort -n | awk '{a[NR] = $1}
                function at(q,  i) { i = int(NR * q + 0.5); if (i < 1) i = 1; return a[i] }
                END {if (NR) printf "%.3f %.3f ", at(0.5), at(0.99); else printf "0 0 "}'
            awk '/^status codes:/ {gsub(",", ""); x = $5 + $7 + $9} /^requests:/ {gsub(",", ""); f = $10 + $12} END {print f + x + 0}' "$WORK/$name.txt"
        } ;;
    esac
}

median() { sort -n | awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; else print 0}'; }

# ---- Run 1: tls.mode = "off"; publish the site, start nginx on its directory, HTTP.
start_daemon off
PROJECT_ID=$("$BIN" projects create site --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect site "$WORK/site" --branch main >/dev/null
echo "== deploying the site (project $PROJECT_ID)" >&2
timeout 300 "$BIN" deploy site --follow >"$WORK/deploy.log" 2>&1 || { tail -n 20 "$WORK/deploy.log" >&2; exit 1; }
SITE_DIR=$(find "$WORK/data/sites/$PROJECT_ID" -mindepth 1 -maxdepth 1 -type d ! -name '*.index' | head -n 1)
[ -f "$SITE_DIR/big.bin" ] || { echo "no published site under $WORK/data/sites/$PROJECT_ID" >&2; exit 1; }
# The data directory is owner-only and nginx's workers run as another user, so nginx serves
# a copy of the published directory (the same bytes), readable by them.
cp -a "$SITE_DIR" "$WORK/nginx-site"
chmod -R a+rX "$WORK/nginx-site"
chmod a+x "$WORK"
SITE_DIR="$WORK/nginx-site"
grep -h 'indexed the site' "$WORK/deploy.log" | sed 's/^/  deploy log: /' >&2 || true

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
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$NGINX_HTTP_PORT;
        listen 127.0.0.1:$NGINX_HTTPS_PORT ssl http2;
        server_name $HOST;
        ssl_certificate $WORK/nginx.pem;
        ssl_certificate_key $WORK/nginx.key;
        root $SITE_DIR;
    }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

URL_cantila_http="http://$HOST:$EDGE_HTTP_PORT"
URL_nginx_http="http://$HOST:$NGINX_HTTP_PORT"
# Both servers' names resolve to 127.0.0.1 for every client, through the private hosts file.
{ cat /etc/hosts; echo "127.0.0.1 $HOST"; } >"$WORK/hosts"
printf '#!/bin/sh\n# Runs "$@" with $HOSTS_FILE over /etc/hosts, in the caller'"'"'s new mount namespace.\nmount --bind "$HOSTS_FILE" /etc/hosts && exec "$@"\n' >"$WORK/with-hosts.sh"
chmod +x "$WORK/with-hosts.sh"
WRAP=(env "HOSTS_FILE=$WORK/hosts" unshare -m "$WORK/with-hosts.sh")

for file in small.html big.bin; do
    check "cantila http" "$file" --resolve "$HOST:$EDGE_HTTP_PORT:127.0.0.1" "$URL_cantila_http/$file"
    check "nginx http" "$file" --resolve "$HOST:$NGINX_HTTP_PORT:127.0.0.1" "$URL_nginx_http/$file"
done

# `rounds PROTOCOL TOOL`: ROUNDS rounds, each measuring both files on both servers in turn
# (the servers' order alternates from round to round).
rounds() {
    local protocol=$1 tool=$2 round file server url var
    for file in small.html big.bin; do
        echo "== warm-up: $protocol $file" >&2
        for server in cantila nginx; do
            var="URL_${server}_${protocol//-/_}"
            run "warm-$protocol-$server" "$server" "$tool" "${!var}/$file"
        done
    done
    for round in $(seq 1 "$ROUNDS"); do
        for file in small.html big.bin; do
            echo "== round $round/$ROUNDS: $protocol $file" >&2
            local order=(cantila nginx)
            [ $((round % 2)) -eq 0 ] && order=(nginx cantila)
            for server in "${order[@]}"; do
                var="URL_${server}_${protocol//-/_}"
                run "$protocol-$file-$server.r$round" "$server" "$tool" "${!var}/$file"
            done
        done
    done
}
rounds http wrk

# ---- Run 2: tls.mode = "self-signed"; HTTPS HTTP/1.1 (wrk) and HTTP/2 (h2load).
kill -TERM "$CANTILA_PID"
wait "$CANTILA_PID" 2>/dev/null || true
start_daemon self-signed
CA=$WORK/data/certs/local-ca/ca.pem
URL_cantila_https_h1="https://$HOST:$EDGE_HTTPS_PORT"
URL_nginx_https_h1="https://$HOST:$NGINX_HTTPS_PORT"
URL_cantila_https_h2=$URL_cantila_https_h1
URL_nginx_https_h2=$URL_nginx_https_h1
for file in small.html big.bin; do
    check "cantila https" "$file" --cacert "$CA" --resolve "$HOST:$EDGE_HTTPS_PORT:127.0.0.1" "$URL_cantila_https_h1/$file"
    check "nginx https" "$file" --cacert "$WORK/nginx.pem" --resolve "$HOST:$NGINX_HTTPS_PORT:127.0.0.1" "$URL_nginx_https_h1/$file"
    for port in "$EDGE_HTTPS_PORT" "$NGINX_HTTPS_PORT"; do
        [ "$(curl -sk --http2 -o /dev/null -w '%{http_version}' --resolve "$HOST:$port:127.0.0.1" "https://$HOST:$port/$file")" = 2 ] \
            || { echo "https://$HOST:$port/ does not speak HTTP/2" >&2; exit 1; }
    done
done
rounds https-h1 wrk
rounds https-h2 h2load

# ---- The table: medians over the rounds, and Cantila/nginx.
printf '\nmachine: %s cores; %s round(s) of %ss per row and server, interleaved; -c%s; wrk -t%s; h2load -m10 -t%s\n' \
    "$(nproc)" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$THREADS" "$THREADS"
printf 'cantila: the released daemon with its defaults; nginx %s: worker_processes auto (%s workers), sendfile on\n' \
    "$(nginx -v 2>&1 | sed 's/.*nginx\///')" "$(pgrep -c -P "$NGINX_PID")"
printf '%-22s %-8s %10s %9s %9s %10s %7s\n' "" "server" "req/s" "p50 ms" "p99 ms" "CPU us/req" "errors"
declare -A RATE P99 CPU
for protocol in http https-h1 https-h2; do
    tool=wrk
    [ "$protocol" = https-h2 ] && tool=h2load
    for file in small.html big.bin; do
        size="100 B"
        [ "$file" = big.bin ] && size="1 MiB"
        for server in cantila nginx; do
            : >"$WORK/rows"
            for round in $(seq 1 "$ROUNDS"); do
                name="$protocol-$file-$server.r$round"
                read -r n r p50 p99 e <<<"$(figures "$name" "$tool")"
                cpu=$(awk -v t="$(cat "$WORK/$name.cpu")" -v n="$n" -v hz="$TICKS" 'BEGIN {printf "%.1f", n ? t * 1e6 / hz / n : 0}')
                echo "$r $p50 $p99 $cpu $e" >>"$WORK/rows"
            done
            r=$(awk '{print $1}' "$WORK/rows" | median)
            p50=$(awk '{print $2}' "$WORK/rows" | median)
            p99=$(awk '{print $3}' "$WORK/rows" | median)
            cpu=$(awk '{print $4}' "$WORK/rows" | median)
            e=$(awk '{s += $5} END {print s + 0}' "$WORK/rows")
            key="$protocol $size"
            printf '%-22s %-8s %10.0f %9.2f %9.2f %10.1f %7s\n' "$key" "$server" "$r" "$p50" "$p99" "$cpu" "$e"
            RATE[$key $server]=$r
            P99[$key $server]=$p99
            CPU[$key $server]=$cpu
        done
    done
done
printf '\n%-22s %14s %14s %16s\n' "cantila/nginx" "req/s ratio" "p99 ratio" "CPU/req ratio"
for protocol in http https-h1 https-h2; do
    for size in "100 B" "1 MiB"; do
        key="$protocol $size"
        printf '%-22s %14s %14s %16s\n' "$key" \
            "$(awk -v a="${RATE[$key cantila]}" -v b="${RATE[$key nginx]}" 'BEGIN {printf "%.2f", b ? a / b : 0}')" \
            "$(awk -v a="${P99[$key cantila]}" -v b="${P99[$key nginx]}" 'BEGIN {printf "%.2f", b ? a / b : 0}')" \
            "$(awk -v a="${CPU[$key cantila]}" -v b="${CPU[$key nginx]}" 'BEGIN {printf "%.2f", b ? a / b : 0}')"
    done
done
printf 'cantila: %s threads, RSS %s MiB at the end\n' \
    "$(awk '/^Threads/ {print $2}' "/proc/$CANTILA_PID/status")" \
    "$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$CANTILA_PID/status")"
grep -h -E ' (WARN|ERROR) ' "$WORK"/cantila-*.log | sed -E 's/^[^ ]+ +//; s/(req|dep)_[A-Za-z0-9]+/\1_*/g' \
    | cut -c1-160 | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/  cantila log: /' || true
