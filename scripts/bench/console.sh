#!/usr/bin/env bash
# Console benchmark: the page weight of assets/console (raw and as sent with gzip), and the
# time to first render of the projects page in headless Chromium, served by the daemon's
# console and by nginx serving a copy of the same files (gzip on, Cache-Control: no-cache,
# `/v1` proxied to the same daemon), in one run with loads alternating between the two.
# Reports medians and the ratio console/nginx for cold loads (cache cleared) and warm ones
# (revalidated). Loopback only; stops by itself.
#
# --no-build uses the release binaries already in the target dir.
#
#   scripts/bench/console.sh [--runs 20] [--projects 25] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=20
PROJECTS=25
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --projects) PROJECTS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) echo "usage: $0 [--runs N] [--projects N] [--no-build]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need nginx nginx
bench_need curl curl
bench_need python3 python3
bench_need chromedriver chromium-driver
bench_need chromium chromium

[ "$BUILD" = 1 ] && bench_build --bin cantila --example console_bench
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/cantila
BENCH=$TARGET/release/examples/console_bench
bench_workdir

API_PORT=$(free_port)
"$BIN" serve --data-dir "$WORK/data" --base-domain bench.test --api-listen "127.0.0.1:$API_PORT" \
    --http-listen "127.0.0.1:$(free_port)" --https-listen "127.0.0.1:$(free_port)" >"$WORK/cantila.log" 2>&1 &
PIDS+=($!)
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"
TOKEN=$CANTILA_TOKEN
CONSOLE="http://127.0.0.1:$API_PORT"
for i in $(seq 1 "$PROJECTS"); do
    curl -sf -o /dev/null -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -d "{\"name\":\"site-$i\"}" "$CONSOLE/v1/projects"
done

# ---- Page weight: every file, raw and as the daemon sends it to a gzip-accepting browser.
raw=0; sent=0; files=0
while IFS= read -r file; do
    rel=${file#assets/console/}
    url="$CONSOLE/assets/$rel"
    [ "$rel" = index.html ] && url="$CONSOLE/projects"
    raw=$((raw + $(stat -c %s "$file")))
    sent=$((sent + $(curl -s -o /dev/null -H 'accept-encoding: gzip' -w '%{size_download}' "$url")))
    files=$((files + 1))
done < <(find assets/console -type f | sort)
echo "page weight: $files files, $raw bytes raw, $sent bytes as sent (gzip)"

# ---- nginx serving a copy of the same files.
# nginx's workers drop root: they need to read the copy (mktemp -d makes a 0700 dir).
chmod 755 "$WORK"
cp -r assets/console "$WORK/site"
chmod -R a+rX "$WORK/site"
NGINX_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    gzip on;
    gzip_comp_level 9;
    gzip_min_length 512;
    gzip_types text/css application/javascript image/svg+xml;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/site;
        add_header Cache-Control no-cache;
        location /assets/ { alias $WORK/site/; }
        location /v1/ {
            proxy_pass http://127.0.0.1:$API_PORT;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
        location / { try_files /index.html =404; }
    }
}
CONF
nginx -c "$WORK/nginx.conf" &
PIDS+=($!)
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/assets/js/app.js" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/assets/js/app.js" || { echo "nginx does not serve the copy" >&2; cat "$WORK/nginx-error.log" >&2; exit 1; }

DRIVER_PORT=$(free_port)
chromedriver --port="$DRIVER_PORT" >"$WORK/chromedriver.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$DRIVER_PORT/status" | grep -q '"ready":true' && break; sleep 0.1; done

echo "time to first render of /projects ($PROJECTS projects), $RUNS loads each:"
"$BENCH" --driver "http://127.0.0.1:$DRIVER_PORT" --token "$TOKEN" --runs "$RUNS" \
    --console "$CONSOLE" --peer "http://127.0.0.1:$NGINX_PORT"
