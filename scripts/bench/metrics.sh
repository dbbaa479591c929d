#!/usr/bin/env bash
# The cost of sampling metrics: the daemon's CPU while it samples N instances, beside the
# same daemon on the same data dir with the collector off, in one run. `cantila serve`
# deploys a busybox httpd app and scales it to N instances (size nano); then, for each of
# the two configurations ([metrics] enabled = true with interval_secs, then enabled =
# false), the daemon is (re)started, settles, and its CPU time (utime + stime from
# /proc/PID/stat) is measured over a fixed window, with dockerd's over the same window
# (the engine answers the stats calls, so it pays too; it is shared, so its figure is
# noisy). Reports both as percent of one core, the difference per instance-sample, and
# the ratio. Loopback and the Docker bridge only; bounded by the window and timeouts.
#
#   scripts/bench/metrics.sh [--instances 8] [--window 60] [--interval 10]
# CANTILA_BIN=path runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/../.."

INSTANCES=8
WINDOW=60
INTERVAL=10
SETTLE=5
while [ $# -gt 0 ]; do
    case "$1" in
        --instances) INSTANCES="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --interval) INTERVAL="$2"; shift 2 ;;
        *) echo "usage: $0 [--instances N] [--window SECONDS] [--interval SECONDS]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need curl curl
bench_need git git
bench_need python3 python3
bench_need_engine
bench_build
bench_workdir
DAEMON_PID=

API_PORT=$(free_port)
EDGE_PORT=$(free_port)
export CANTILA_URL="http://127.0.0.1:$API_PORT"

# Clock ticks of CPU (user + system) a process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS_PER_SEC=$(getconf CLK_TCK)
DOCKERD_PID=$(pgrep -o -x dockerd || true)

start_daemon() { # enabled: true|false
    printf '[tls]\nmode = "off"\n\n[scale]\nmax_instances = %s\n\n[metrics]\nenabled = %s\ninterval_secs = %s\n' \
        "$INSTANCES" "$1" "$INTERVAL" >"$WORK/cantila.toml"
    "$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" --base-domain bench.test \
        --api-listen "127.0.0.1:$API_PORT" --http-listen "127.0.0.1:$EDGE_PORT" \
        --https-listen 127.0.0.1:0 >>"$WORK/cantila.log" 2>&1 &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    bench_wait_api "$CANTILA_URL" "$WORK/data"
}

stop_daemon() {
    kill "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
}

measure() { # label -> prints "cantila_percent dockerd_percent"
    sleep "$SETTLE"
    local c0 d0 c1 d1
    c0=$(cpu_ticks "$DAEMON_PID")
    d0=$( [ -n "$DOCKERD_PID" ] && cpu_ticks "$DOCKERD_PID" || echo 0)
    sleep "$WINDOW"
    c1=$(cpu_ticks "$DAEMON_PID")
    d1=$( [ -n "$DOCKERD_PID" ] && cpu_ticks "$DOCKERD_PID" || echo 0)
    python3 -c 'import sys
c, d, w, t = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print("%.3f %.3f" % (c / t / w * 100, d / t / w * 100))' "$((c1 - c0))" "$((d1 - d0))" "$WINDOW" "$TICKS_PER_SEC"
}

mkdir -p "$WORK/app/www"
echo ok >"$WORK/app/www/index.html"
bench_busybox_app "$WORK/app"

start_daemon true
"$BIN" projects create app >/dev/null
PROJECT_ID=$("$BIN" projects get app --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect app "$WORK/app" --branch main >/dev/null
timeout 300 "$BIN" deploy app --follow >"$WORK/deploy.log" 2>&1 || { cat "$WORK/deploy.log" >&2; exit 1; }
timeout 300 "$BIN" scale app --instances "$INSTANCES" --size nano >/dev/null
RUNNING=$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" --filter status=running | wc -l)
echo "instances running: $RUNNING (asked for $INSTANCES); sampling every ${INTERVAL}s; window ${WINDOW}s"

# A little traffic before the window, so the table below has requests to show.
for _ in $(seq 1 50); do curl -s -o /dev/null -H "Host: app.admin.bench.test" "http://127.0.0.1:$EDGE_PORT/"; done
read -r ON_CANTILA ON_DOCKERD < <(measure on)
SAMPLES=$(python3 -c "print(int($WINDOW / $INTERVAL) * $RUNNING)")
echo "--- cantila metrics app (after the window) ---"
"$BIN" metrics app --since 10m --step 10s || true
echo "---"
stop_daemon
start_daemon false
read -r OFF_CANTILA OFF_DOCKERD < <(measure off)
stop_daemon

python3 - "$ON_CANTILA" "$OFF_CANTILA" "$ON_DOCKERD" "$OFF_DOCKERD" "$SAMPLES" "$WINDOW" <<'EOF'
import sys
on, off, don, doff, samples, window = (float(x) for x in sys.argv[1:])
print(f"{'':28}{'collector on':>14}{'collector off':>15}")
print(f"{'cantila CPU (% of a core)':28}{on:>14.3f}{off:>15.3f}")
print(f"{'dockerd CPU (% of a core)':28}{don:>14.3f}{doff:>15.3f}")
extra_ms = (on - off) / 100 * window * 1000
per_sample = extra_ms / samples if samples else float("nan")
print(f"cantila: {extra_ms:.0f} ms more CPU over {window:.0f} s, {per_sample:.2f} ms per instance sample "
      f"({samples:.0f} samples); on/off ratio {on / off if off else float('inf'):.2f}")
dextra = (don - doff) / 100 * window * 1000
print(f"dockerd: {dextra:.0f} ms more CPU over the window ({dextra / samples if samples else float('nan'):.2f} ms per sample; shared engine, noisy)")
EOF
