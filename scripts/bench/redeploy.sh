#!/usr/bin/env bash
# Zero-downtime redeploys under load: `cantila serve --base-domain bench.test` deploys a
# busybox httpd app (a 100-byte index.html on 8080) from a local git repo, then a client
# sends a constant request rate through the edge (open loop: request i is due at
# start + i/rate whatever happened before, spread over keep-alive connections) while the
# script redeploys the app N times, each time committing a new index.html ("v1", "v2", ...)
# and running `cantila deploy app --follow`. Reports requests sent, 2xx, non-2xx,
# connection errors, latency, the duration, each redeploy's time and which version answered
# when. Target: zero non-2xx and zero errors; exits 1 otherwise (or if a deploy failed or
# the last version never answered). Loopback and the Docker bridge only; bounded: each
# deploy has a timeout and the client a hard deadline. HTTP only (tls.mode = "off": in
# self-signed mode plain HTTP gets a 308 to https once the hostname has a certificate).
#
#   scripts/bench/redeploy.sh [--redeploys 3] [--rate 100] [--connections 10]
set -euo pipefail
cd "$(dirname "$0")/../.."

REDEPLOYS=3
RATE=100
CONNECTIONS=10
WARMUP=3
COOLDOWN=4
DEPLOY_TIMEOUT=180
while [ $# -gt 0 ]; do
    case "$1" in
        --redeploys) REDEPLOYS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        *) echo "usage: $0 [--redeploys N] [--rate REQ_PER_S] [--connections N]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need curl curl
bench_need git git
bench_need python3 python3
bench_need_engine
bench_build
bench_workdir
API_PORT=$(free_port)
EDGE_PORT=$(free_port)
BASE_DOMAIN=bench.test
HOST=app.admin.$BASE_DOMAIN

# The app: busybox httpd serving index.html = "vN " padded to 100 bytes, N the release.
page() { # n: index.html for version n
    python3 -c 'import sys; sys.stdout.write(("v%s " % sys.argv[1]).ljust(99, "x") + "\n")' "$1" >"$WORK/app/www/index.html"
}
release() { # n: writes and commits version n
    page "$1"
    git -C "$WORK/app" add -A
    bench_git "$WORK/app" commit -q -m "v$1"
}
mkdir -p "$WORK/app/www"
page 0
bench_busybox_app "$WORK/app"

printf '[tls]\nmode = "off"\n' >"$WORK/cantila.toml"
"$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" --base-domain "$BASE_DOMAIN" \
    --api-listen "127.0.0.1:$API_PORT" --http-listen "127.0.0.1:$EDGE_PORT" \
    --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"

PROJECT_ID=$("$BIN" projects create app --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect app "$WORK/app" --branch main >/dev/null
echo "== first deploy (project $PROJECT_ID)" >&2
timeout "$DEPLOY_TIMEOUT" "$BIN" deploy app --follow >"$WORK/deploy-0.log" 2>&1 || { tail -n 20 "$WORK/deploy-0.log" >&2; exit 1; }
for _ in $(seq 1 100); do
    [ "$(curl -s -H "Host: $HOST" "http://127.0.0.1:$EDGE_PORT/" | cut -c1-3)" = "v0 " ] && break
    sleep 0.1
done

# The constant-rate client: CONNECTIONS threads, each with one keep-alive connection;
# request i is due at t0 + i/RATE and goes to thread i mod CONNECTIONS. A failed request
# is counted, never retried; its connection is reopened for the next one.
cat >"$WORK/load.py" <<'PY'
import http.client, json, os, sys, threading, time

port, host, rate, conns, stop_file, deadline_s, out = sys.argv[1:8]
port, rate, conns, deadline_s = int(port), float(rate), int(conns), float(deadline_s)
t0 = time.time() + 0.2
results = [[] for _ in range(conns)]

def worker(k):
    conn = None
    i = k
    while True:
        due = t0 + i / rate
        if due - t0 > deadline_s or os.path.exists(stop_file):
            break
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        start = time.time()
        status, error, version = None, None, None
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/", headers={"Host": host})
            response = conn.getresponse()
            body = response.read()
            status = response.status
            version = body.split(b" ", 1)[0].decode(errors="replace") if status == 200 else None
            if response.will_close:
                conn.close()
                conn = None
        except Exception as exc:  # connection refused/reset, timeout, bad response...
            error = type(exc).__name__ + (": " + str(exc) if str(exc) else "")
            if conn is not None:
                conn.close()
            conn = None
        results[k].append((due - t0, start - t0, time.time() - start, status, error, version))
        i += conns
    if conn is not None:
        conn.close()

threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
rows = sorted(row for per in results for row in per)
json.dump({"t0": t0, "end": time.time(), "rows": rows}, open(out, "w"))
PY
python3 "$WORK/load.py" "$EDGE_PORT" "$HOST" "$RATE" "$CONNECTIONS" "$WORK/stop" \
    $(( WARMUP + COOLDOWN + REDEPLOYS * (DEPLOY_TIMEOUT + 5) )) "$WORK/load.json" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
sleep "$WARMUP"

: >"$WORK/redeploys.txt"
DEPLOY_FAILED=0
for n in $(seq 1 "$REDEPLOYS"); do
    release "$n"
    echo "== redeploy $n/$REDEPLOYS" >&2
    start=$(now_ms)
    rc=0
    timeout "$DEPLOY_TIMEOUT" "$BIN" deploy app --follow >"$WORK/deploy-$n.log" 2>&1 || rc=$?
    end=$(now_ms)
    echo "$n $start $end $rc" >>"$WORK/redeploys.txt"
    if [ "$rc" -ne 0 ]; then
        DEPLOY_FAILED=1
        echo "redeploy $n failed (exit $rc):" >&2
        tail -n 10 "$WORK/deploy-$n.log" >&2
    fi
done
sleep "$COOLDOWN"
touch "$WORK/stop"
wait "$LOAD_PID"
INSTANCES=$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" --filter label=cantila.kind=web | wc -l)

python3 - "$WORK/load.json" "$WORK/redeploys.txt" "$RATE" "$CONNECTIONS" "$REDEPLOYS" "$DEPLOY_FAILED" "$INSTANCES" "$(nproc)" <<'PY'
import collections, json, sys

load = json.load(open(sys.argv[1]))
rate, conns, redeploys, deploy_failed, instances, cores = sys.argv[3:9]
t0, rows = load["t0"], load["rows"]
ok = [r for r in rows if r[3] is not None and 200 <= r[3] < 300]
non2xx = [r for r in rows if r[3] is not None and not 200 <= r[3] < 300]
errors = [r for r in rows if r[4] is not None]
latencies = sorted(r[2] * 1000 for r in rows if r[3] is not None)
pct = lambda p: latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else float("nan")
late = sum(1 for r in rows if r[1] - r[0] > 0.1)
duration = max(r[1] + r[2] for r in rows) if rows else 0.0

print()
print(f"machine: {cores} cores; target {float(rate):g} req/s over {conns} keep-alive connections; "
      f"{redeploys} redeploys; busybox httpd, 100-byte file")
print(f"duration:        {duration:8.2f} s  (achieved {len(rows) / duration if duration else 0:.1f} req/s; "
      f"{late} requests started >100 ms late)")
print(f"requests sent:   {len(rows):8d}")
print(f"2xx:             {len(ok):8d}")
print(f"non-2xx:         {len(non2xx):8d}  {dict(collections.Counter(r[3] for r in non2xx))}")
print(f"errors:          {len(errors):8d}  {dict(collections.Counter(r[4].split(':')[0] for r in errors))}")
print(f"latency ms:      p50 {pct(50):.1f}  p99 {pct(99):.1f}  max {latencies[-1] if latencies else float('nan'):.1f}")
for line in open(sys.argv[2]):
    n, start, end, rc = line.split()
    start_s, end_s = int(start) / 1000 - t0, int(end) / 1000 - t0
    print(f"redeploy {n}: t={start_s:6.2f}s .. {end_s:6.2f}s  took {end_s - start_s:5.2f} s  "
          f"{'ok' if rc == '0' else 'FAILED exit ' + rc}")
first_last = {}
for r in ok:
    version = r[5]
    first, last, count = first_last.get(version, (r[1], r[1], 0))
    first_last[version] = (min(first, r[1]), max(last, r[1]), count + 1)
for version, (first, last, count) in sorted(first_last.items(), key=lambda kv: kv[1][0]):
    print(f"answered by {version:>3}: t={first:6.2f}s .. {last:6.2f}s  ({count} requests)")
for r in (non2xx + errors)[:10]:
    print(f"  failure at t={r[1]:.3f}s: {r[3] if r[3] is not None else r[4]}")
print(f"instances running at the end: {instances}")
failed = bool(non2xx or errors or deploy_failed != "0" or f"v{redeploys}" not in first_last)
print("RESULT:", "FAIL" if failed else "PASS (zero non-2xx, zero errors)")
sys.exit(1 if failed else 0)
PY
