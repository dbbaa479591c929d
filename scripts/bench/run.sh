#!/usr/bin/env bash
# A one-off run against the floor: the time from `cantila run app -- true` (the CLI
# resolves the project, the API makes the run's container from the serving release's
# image with its env, network and size, starts it, the waiter records the exit and
# removes the container, the CLI gets the final status over SSE and exits) to the CLI's
# exit, beside `docker run --rm IMAGE true` of the very same image. Rounds alternate
# which goes first; medians and their ratio are reported. Needs a Docker engine and the
# busybox base image (scripts/ensure-docker.sh, scripts/base-images.sh). Loopback and the
# Docker bridge only.
#
#   scripts/bench/run.sh [--rounds 7]
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=7
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        *) echo "usage: $0 [--rounds N]" >&2; exit 2 ;;
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

bench_busybox_app "$WORK/app"
printf '[tls]\nmode = "off"\n' >"$WORK/cantila.toml"
"$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" --base-domain bench.test \
    --api-listen "127.0.0.1:$API_PORT" --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 \
    >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"

PROJECT_ID=$("$BIN" projects create app --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect app "$WORK/app" --branch main >/dev/null
timeout 180 "$BIN" deploy app --follow >"$WORK/deploy.log" 2>&1 || { tail -n 20 "$WORK/deploy.log" >&2; exit 1; }
IMAGE=$(curl -sf -H "Authorization: Bearer $CANTILA_TOKEN" "$CANTILA_URL/v1/projects/$PROJECT_ID/deploys?limit=1" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["deploys"][0]["image"])')

# One warm-up of each, so neither side pays a first-use cost the other does not.
"$BIN" run app -- true
docker run --rm --label cantila.bench=1 "$IMAGE" true

cantila_run() {
    local start
    start=$(now_ms)
    "$BIN" run app -- true || { echo "cantila run failed" >&2; exit 1; }
    cantila_times+=($(( $(now_ms) - start )))
}
docker_run() {
    local start
    start=$(now_ms)
    docker run --rm --label cantila.bench=1 "$IMAGE" true || { echo "docker run failed" >&2; exit 1; }
    docker_times+=($(( $(now_ms) - start )))
}
cantila_times=()
docker_times=()
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then cantila_run; docker_run; else docker_run; cantila_run; fi
done
# Every run was recorded and left no container behind.
left=$(docker ps -aq --filter "label=cantila.project=$PROJECT_ID" --filter label=cantila.kind=run | wc -l)
[ "$left" -eq 0 ] || { echo "$left run containers left behind" >&2; exit 1; }

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
RUN_MEDIAN=$(median "${cantila_times[@]}")
DOCKER_MEDIAN=$(median "${docker_times[@]}")
printf '\nmachine: %s cores; %s rounds; image %s\n' "$(nproc)" "$ROUNDS" "$IMAGE"
printf 'cantila run app -- true (to the CLI exit):  median %5d ms  (runs: %s)\n' "$RUN_MEDIAN" "${cantila_times[*]}"
printf 'docker run --rm IMAGE true (floor):        median %5d ms  (runs: %s)\n' "$DOCKER_MEDIAN" "${docker_times[*]}"
printf 'ratio cantila/docker: %.2f\n' "$(awk "BEGIN{print $RUN_MEDIAN/$DOCKER_MEDIAN}")"
