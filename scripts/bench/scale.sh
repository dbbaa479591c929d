#!/usr/bin/env bash
# Scale-out time against the floor: from `POST /v1/projects/:id/scale` (1 → 2 instances)
# until it returns, which is when the new instance has passed its health check and is in
# the edge's route table, beside a bare `docker run` of the same image until its first
# HTTP answer. Each run scales back to 1 in between. One run, same machine, with the
# ratio. Needs a Docker engine and the busybox base image. Loopback and the Docker bridge only.
#
#   scripts/bench/scale.sh [--runs 5]
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=5
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need_engine
bench_build
bench_workdir
bench_busybox_app "$WORK/app"

API_PORT=$(free_port)
printf '[deploy]\ndrain_secs = 0\n\n[tls]\nmode = "off"\n' >"$WORK/cantila.toml"
"$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" --api-listen "127.0.0.1:$API_PORT" \
    --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"

PROJECT_ID=$("$BIN" projects create bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect bench "$WORK/app" --branch main >/dev/null
"$BIN" deploy bench --follow >"$WORK/deploy.log" 2>&1
IMAGE=$("$BIN" deploys bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deploys"][0]["image"])')

scale_times=()
floor_times=()
for _ in $(seq 1 "$RUNS"); do
    start=$(now_ms)
    "$BIN" scale bench --instances 2 >/dev/null
    scale_times+=($(( $(now_ms) - start )))
    "$BIN" scale bench --instances 1 >/dev/null

    start=$(now_ms)
    cid=$(docker run -d --label cantila.bench=1 --network "cantila-$PROJECT_ID" "$IMAGE")
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cid")
    until curl -sf -o /dev/null "http://$ip:8080/"; do sleep 0.01; done
    floor_times+=($(( $(now_ms) - start )))
    docker rm -f "$cid" >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
SCALE_MEDIAN=$(median "${scale_times[@]}")
FLOOR_MEDIAN=$(median "${floor_times[@]}")
printf '\nmachine: %s cores; %s runs; image %s\n' "$(nproc)" "$RUNS" "$IMAGE"
printf 'POST scale 1 -> 2 until the new instance takes traffic: median %5d ms  (runs: %s)\n' "$SCALE_MEDIAN" "${scale_times[*]}"
printf 'bare docker run + first HTTP answer (floor):           median %5d ms  (runs: %s)\n' "$FLOOR_MEDIAN" "${floor_times[*]}"
printf 'ratio cantila/floor: %.2f\n' "$(awk "BEGIN{print $SCALE_MEDIAN/$FLOOR_MEDIAN}")"
