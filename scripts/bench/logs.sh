#!/usr/bin/env bash
# Runtime-log throughput: `cantila serve --base-domain bench.test` deploys one busybox app
# (httpd on 8080 for the health check and the edge, plus, with CHATTY=1, a loop printing
# 2,000 lines of ~60 bytes to stdout every 100 ms: about 20,000 lines/s), first quiet, then
# chatty; between the two, the same image runs chatty beside Cantila with `docker run` (its
# output is not collected): the floor that separates what the app and dockerd cost the
# machine from what collecting the lines costs. Reports, from one run:
#   - lines/s the app produced (counted in Docker's own log over the window) beside lines/s
#     Cantila stored in the same wall-clock window, and their ratio; then, once the writer
#     caught up, whether every line of the window is stored exactly once;
#   - the CPU (percent of one core) of the daemon and of dockerd: quiet, chatty but not
#     collected, chatty and collected;
#   - wrk against the API (GET /v1/projects) and through the edge (GET / of the app) in the
#     same three states, with the ratios collected/quiet and collected/not-collected of
#     req/s and p50/p99 latency.
# Loopback and the Docker bridge only; bounded: every step has a timeout, wrk runs for a
# fixed time, and the app is removed on exit.
#
#   scripts/bench/logs.sh [--window 15] [--duration 10] [--connections 10]
set -euo pipefail
cd "$(dirname "$0")/../.."

WINDOW=15
DURATION=10
CONNECTIONS=10
WARMUP=5
DEPLOY_TIMEOUT=180
while [ $# -gt 0 ]; do
    case "$1" in
        --window) WINDOW="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        *) echo "usage: $0 [--window S] [--duration S] [--connections N]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need curl curl
bench_need git git
bench_need python3 python3
bench_need wrk wrk
bench_need sqlite3 sqlite3
bench_need_engine
bench_build
bench_workdir

API_PORT=$(free_port)
EDGE_PORT=$(free_port)
BASE_DOMAIN=bench.test
HOST=app.admin.$BASE_DOMAIN

mkdir -p "$WORK/app/www"
echo "quiet or chatty" >"$WORK/app/www/index.html"
cat >"$WORK/app/chatty.sh" <<'SH'
httpd -p 8080 -h /www
if [ "$CHATTY" = "1" ]; then
    while :; do
        awk 'BEGIN { for (i = 0; i < 2000; i++) print "chatty line " i " lorem ipsum dolor sit amet, consectetur" }'
        usleep 100000
    done
fi
exec sleep 2147483647
SH
printf 'FROM busybox:latest\nCOPY www /www\nCOPY chatty.sh /chatty.sh\nEXPOSE 8080\nCMD ["sh", "/chatty.sh"]\n' >"$WORK/app/Dockerfile"
git -C "$WORK/app" init -q -b main
git -C "$WORK/app" add -A
bench_git "$WORK/app" commit -q -m app

printf '[tls]\nmode = "off"\n' >"$WORK/cantila.toml"
"$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" --base-domain "$BASE_DOMAIN" \
    --api-listen "127.0.0.1:$API_PORT" --http-listen "127.0.0.1:$EDGE_PORT" \
    --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
CANTILA_PID=$!
PIDS+=("$CANTILA_PID")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"
DB="$WORK/data/cantila.db"

PROJECT_ID=$("$BIN" projects create app --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect app "$WORK/app" --branch main >/dev/null
"$BIN" env set app CHATTY=0 >/dev/null
echo "== quiet deploy (project $PROJECT_ID)" >&2
timeout "$DEPLOY_TIMEOUT" "$BIN" deploy app --follow >"$WORK/deploy-quiet.log" 2>&1 || { tail -n 20 "$WORK/deploy-quiet.log" >&2; exit 1; }
for _ in $(seq 1 100); do curl -sf -H "Host: $HOST" "http://127.0.0.1:$EDGE_PORT/" >/dev/null && break; sleep 0.1; done

DOCKERD_PID=$(pidof dockerd | awk '{print $1}')
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
cpu_percent() { # ticks_before ticks_after seconds
    awk -v a="$1" -v b="$2" -v s="$3" -v t="$TICKS" 'BEGIN { printf "%.1f", (b - a) / t / s * 100 }'
}
run_wrk() { # name url [header]
    if [ $# -gt 2 ]; then
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "$3" "$2" >"$WORK/wrk-$1.txt"
    else
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$2" >"$WORK/wrk-$1.txt"
    fi
}
rate() { awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$1.txt"; }
# wrk prints latencies with units (us, ms, s); normalise to ms.
pct() { awk -v p="$2" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } print v }' "$WORK/wrk-$1.txt"; }
cpu_window() { # name: CPU of the daemon and dockerd over WINDOW seconds
    local c0 d0 t0 elapsed
    c0=$(cpu_ticks "$CANTILA_PID"); d0=$(cpu_ticks "$DOCKERD_PID"); t0=$(now_s)
    sleep "$WINDOW"
    elapsed=$(awk -v a="$t0" -v b="$(now_s)" 'BEGIN{print b-a}')
    eval "CPU_$1=$(cpu_percent "$c0" "$(cpu_ticks "$CANTILA_PID")" "$elapsed")"
    eval "DOCKERD_$1=$(cpu_percent "$d0" "$(cpu_ticks "$DOCKERD_PID")" "$elapsed")"
}
wrk_both() { # name
    echo "== $1: wrk GET /v1/projects" >&2
    run_wrk "api-$1" "$CANTILA_URL/v1/projects" "Authorization: Bearer $CANTILA_TOKEN"
    echo "== $1: wrk GET / through the edge" >&2
    run_wrk "edge-$1" "http://127.0.0.1:$EDGE_PORT/" "Host: $HOST"
}

echo "== quiet: CPU over ${WINDOW}s" >&2
cpu_window quiet
wrk_both quiet

# The same image, chatty, run beside Cantila by Docker alone: nobody reads its output.
IMAGE=$(docker inspect -f '{{.Config.Image}}' "$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" --filter label=cantila.kind=web | head -1)")
FLOOR_CID=$(docker run -d --init --rm --network none --label "cantila.project=$PROJECT_ID" -e CHATTY=1 "$IMAGE")
sleep "$WARMUP"
echo "== chatty, not collected: CPU over ${WINDOW}s" >&2
cpu_window uncollected
wrk_both uncollected
docker rm -f "$FLOOR_CID" >/dev/null

echo "== chatty deploy" >&2
"$BIN" env set app CHATTY=1 >/dev/null
timeout "$DEPLOY_TIMEOUT" "$BIN" deploy app --follow >"$WORK/deploy-chatty.log" 2>&1 || { tail -n 20 "$WORK/deploy-chatty.log" >&2; exit 1; }
CID=$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" --filter label=cantila.kind=web | head -1)
[ -n "$CID" ] || { echo "the chatty instance is not running" >&2; exit 1; }
sleep "$WARMUP"

echo "== chatty: stored vs produced over ${WINDOW}s" >&2
max_seq() { sqlite3 "file:$DB?mode=ro" "SELECT COALESCE(MAX(seq), 0) FROM runtime_logs"; }
S0=$(max_seq); C0=$(cpu_ticks "$CANTILA_PID"); D0=$(cpu_ticks "$DOCKERD_PID"); T0=$(now_s)
sleep "$WINDOW"
S1=$(max_seq); C1=$(cpu_ticks "$CANTILA_PID"); D1=$(cpu_ticks "$DOCKERD_PID"); T1=$(now_s)
ELAPSED=$(awk -v a="$T0" -v b="$T1" 'BEGIN{print b-a}')
CPU_collected=$(cpu_percent "$C0" "$C1" "$ELAPSED")
DOCKERD_collected=$(cpu_percent "$D0" "$D1" "$ELAPSED")
PRODUCED=$(docker logs --since "$T0" --until "$T1" "$CID" 2>/dev/null | wc -l)
# Completeness: once the writer has caught up, every line Docker logged in the window is
# stored exactly once (timestamps are Docker's own, so the windows are the same).
T0_NS=$(awk -v t="$T0" 'BEGIN { printf "%.0f", t * 1e9 }')
T1_NS=$(awk -v t="$T1" 'BEGIN { printf "%.0f", t * 1e9 }')
stored_in_window() { sqlite3 "file:$DB?mode=ro" "SELECT COUNT(*), COUNT(DISTINCT at_ns || line) FROM runtime_logs WHERE stream = 'stdout' AND at_ns >= $T0_NS AND at_ns < $T1_NS"; }
for _ in $(seq 1 60); do
    IN_WINDOW=$(stored_in_window)
    [ "${IN_WINDOW%%|*}" -ge "$PRODUCED" ] && break
    sleep 0.5
done
LAG_S=$(awk -v a="$T1" -v b="$(now_s)" 'BEGIN{printf "%.1f", b-a}')
wrk_both collected
STILL_CHATTY=$(docker logs --since 2s "$CID" 2>/dev/null | wc -l)
DROPPED=$(grep -c "access-log records dropped" "$WORK/cantila.log" || true)
STORED_BYTES=$(sqlite3 "file:$DB?mode=ro" "SELECT bytes FROM runtime_log_usage WHERE project_id = '$PROJECT_ID'")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
STORED_RATE=$(awk -v n="$((S1 - S0))" -v s="$ELAPSED" 'BEGIN{printf "%.0f", n / s}')
PRODUCED_RATE=$(awk -v n="$PRODUCED" -v s="$ELAPSED" 'BEGIN{printf "%.0f", n / s}')
printf '\nmachine: %s cores; app: busybox awk, 2,000 lines of ~60 bytes per 100 ms; window %ss; wrk -t1 -c%s -d%ss\n' \
    "$(nproc)" "$WINDOW" "$CONNECTIONS" "$DURATION"
printf 'produced (Docker log):       %8s lines/s\n' "$PRODUCED_RATE"
printf 'stored (Cantila, same wall): %8s lines/s\n' "$STORED_RATE"
printf 'ratio stored/produced:       %8s\n' "$(ratio "$STORED_RATE" "$PRODUCED_RATE")"
printf 'window complete:             %s of %s lines stored (distinct: %s), %ss after the window\n' \
    "${IN_WINDOW%%|*}" "$PRODUCED" "${IN_WINDOW##*|}" "$LAG_S"
printf 'project log size now:        %8s bytes (cap 67108864)\n' "${STORED_BYTES:-0}"
for state in quiet uncollected collected; do
    eval "printf 'CPU %-12s  daemon %6s %%  dockerd %6s %% of a core\n' $state \"\$CPU_$state\" \"\$DOCKERD_$state\""
done
for target in api edge; do
    for state in quiet uncollected collected; do
        printf '%-5s %-12s %10s req/s  p50 %7s ms  p99 %7s ms\n' "$target" "$state" "$(rate "$target-$state")" \
            "$(pct "$target-$state" 50%)" "$(pct "$target-$state" 99%)"
    done
    for base in quiet uncollected; do
        printf '%-5s collected/%-11s req/s %s  p50 %s  p99 %s\n' "$target" "$base" \
            "$(ratio "$(rate "$target-collected")" "$(rate "$target-$base")")" \
            "$(ratio "$(pct "$target-collected" 50%)" "$(pct "$target-$base" 50%)")" \
            "$(ratio "$(pct "$target-collected" 99%)" "$(pct "$target-$base" 99%)")"
    done
done
printf 'app still chatty at the end: %s lines in its last 2 s; edge access records dropped: %s warning(s) in the log\n' \
    "$STILL_CHATTY" "$DROPPED"
