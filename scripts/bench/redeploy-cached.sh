#!/usr/bin/env bash
# Cached redeploy against the floor: the time of `cantila deploy --follow` for a commit
# whose image already exists (fetch, plan, reuse, start, health check, switch), beside the
# time of a bare `docker run` of the same image until its first HTTP answer. One run,
# same machine, reported with the ratio. Needs a Docker engine and the busybox base image
# (scripts/ensure-docker.sh, scripts/base-images.sh). Loopback and the Docker bridge only.
#
#   scripts/bench/redeploy-cached.sh [--runs 5]
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
# The app: busybox httpd serving one file on 8080.
bench_busybox_app "$WORK/app"

API_PORT=$(free_port)
"$BIN" serve --data-dir "$WORK/data" --api-listen "127.0.0.1:$API_PORT" \
    --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"

PROJECT_ID=$("$BIN" projects create bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect bench "$WORK/app" --branch main >/dev/null
echo "first deploy (builds the image)..." >&2
"$BIN" deploy bench --follow >"$WORK/first.log" 2>&1
IMAGE=$("$BIN" deploys bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deploys"][0]["image"])')

deploy_times=()
floor_times=()
for run in $(seq 1 "$RUNS"); do
    start=$(now_ms)
    "$BIN" deploy bench --follow >"$WORK/redeploy-$run.log" 2>&1
    deploy_times+=($(( $(now_ms) - start )))
    grep -q "reusing image" "$WORK/redeploy-$run.log" || { echo "run $run rebuilt the image" >&2; exit 1; }

    start=$(now_ms)
    cid=$(docker run -d --label cantila.bench=1 --network "cantila-$PROJECT_ID" "$IMAGE")
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cid")
    until curl -sf -o /dev/null "http://$ip:8080/"; do sleep 0.01; done
    floor_times+=($(( $(now_ms) - start )))
    docker rm -f "$cid" >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
DEPLOY_MEDIAN=$(median "${deploy_times[@]}")
FLOOR_MEDIAN=$(median "${floor_times[@]}")
printf '\nmachine: %s cores; %s runs; image %s\n' "$(nproc)" "$RUNS" "$IMAGE"
printf 'cached redeploy (cantila deploy --follow):   median %5d ms  (runs: %s)\n' "$DEPLOY_MEDIAN" "${deploy_times[*]}"
printf 'bare docker run + first HTTP answer (floor): median %5d ms  (runs: %s)\n' "$FLOOR_MEDIAN" "${floor_times[*]}"
printf 'ratio cantila/floor: %.2f\n' "$(awk "BEGIN{print $DEPLOY_MEDIAN/$FLOOR_MEDIAN}")"
