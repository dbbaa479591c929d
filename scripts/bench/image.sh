#!/usr/bin/env bash
# A pulled image to serving, against the floor: the time from `cantila deploy --follow` of
# a project whose source is an image in a registry (pull, digest, plan, start, health
# check, switch) until the edge answers its first request, beside `docker pull` +
# `docker run` of the same image until its first HTTP answer. Each run starts with the
# image's own layer absent on both sides (a new project each run; the reference removed
# before each pull), so both really pull; the busybox base layer is local to both.
# One run of each per round, same machine, reported with the ratio. Needs a Docker
# engine, the busybox base image and the test registry (scripts/ensure-docker.sh,
# scripts/base-images.sh, scripts/ensure-registry.sh). Loopback and the Docker bridge only.
#
#   scripts/bench/image.sh [--runs 5]
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
bench_need curl curl
REGISTRY=$(scripts/ensure-registry.sh | tail -n 1)
CREDENTIALS=$(cat "${REGISTRY_DIR:-/var/lib/cantila-test-registry}/credentials")
REGISTRY_USER=${CREDENTIALS%%:*}
REGISTRY_PASSWORD=${CREDENTIALS#*:}
bench_build
bench_workdir

# The image: busybox httpd serving one file on 8080, pushed under a name of this run.
REPOSITORY="$REGISTRY/bench/image-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
IMAGE="$REPOSITORY:1"
mkdir -p "$WORK/app/www"
echo "pulled" >"$WORK/app/www/index.html"
printf 'FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n' >"$WORK/app/Dockerfile"
docker build -q -t "$IMAGE" --label cantila.bench=1 "$WORK/app" >/dev/null
printf '%s' "$REGISTRY_PASSWORD" | docker --config "$WORK/docker" login -u "$REGISTRY_USER" --password-stdin "$REGISTRY" >/dev/null
docker --config "$WORK/docker" push -q "$IMAGE" >/dev/null
docker rmi -f "$IMAGE" >/dev/null

# Projects still there when the benchmark stops are deleted through the API (their
# containers, networks and images go with them) while the daemon still answers.
bench_cleanup_extra() {
    for id in $(api GET /v1/projects | python3 -c 'import json,sys; print(" ".join(p["id"] for p in json.load(sys.stdin)["items"]))' 2>/dev/null); do
        api DELETE "/v1/projects/$id" >/dev/null || true
    done
    docker rmi -f "$IMAGE" >/dev/null 2>&1 || true
}

BASE_DOMAIN=bench.test
API_PORT=$(free_port)
EDGE_PORT=$(free_port)
# The test registry is on loopback, which the egress policy refuses unless the operator
# allows it (README, "What a tenant can make the server fetch").
printf '[git]\nallowed_networks = ["127.0.0.1/32"]\n' >"$WORK/cantila.toml"
"$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" --base-domain "$BASE_DOMAIN" --api-listen "127.0.0.1:$API_PORT" \
    --http-listen "127.0.0.1:$EDGE_PORT" --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"
api() {
    local method=$1 path=$2
    shift 2
    curl -sf -X "$method" -H "Authorization: Bearer $CANTILA_TOKEN" -H 'Content-Type: application/json' \
        "$CANTILA_URL$path" "$@"
}
api POST /v1/registries -d "{\"server\":\"$REGISTRY\",\"username\":\"$REGISTRY_USER\",\"password\":\"$REGISTRY_PASSWORD\"}" >/dev/null

deploy_times=()
floor_times=()
for run in $(seq 1 "$RUNS"); do
    name="bench-$run"
    created=$("$BIN" projects create "$name" --json)
    project=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    host=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hostname"])')
    api POST "/v1/projects/$project/image" -d "{\"image\":\"$IMAGE\"}" >/dev/null
    docker rmi -f "$IMAGE" >/dev/null 2>&1 || true
    start=$(now_ms)
    "$BIN" deploy "$name" --follow >"$WORK/deploy-$run.log" 2>&1
    until [ "$(curl -s -H "Host: $host" "http://127.0.0.1:$EDGE_PORT/")" = "pulled" ]; do sleep 0.01; done
    deploy_times+=($(( $(now_ms) - start )))
    grep -qi "pull" "$WORK/deploy-$run.log" || { echo "run $run did not pull:" >&2; cat "$WORK/deploy-$run.log" >&2; exit 1; }
    api DELETE "/v1/projects/$project" >/dev/null
    docker rmi -f "$IMAGE" >/dev/null 2>&1 || true

    start=$(now_ms)
    docker --config "$WORK/docker" pull -q "$IMAGE" >/dev/null
    cid=$(docker run -d --label cantila.bench=1 "$IMAGE")
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$cid")
    until curl -sf -o /dev/null "http://$ip:8080/"; do sleep 0.01; done
    floor_times+=($(( $(now_ms) - start )))
    docker rm -f "$cid" >/dev/null
    docker rmi -f "$IMAGE" >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
DEPLOY_MEDIAN=$(median "${deploy_times[@]}")
FLOOR_MEDIAN=$(median "${floor_times[@]}")
printf '\nmachine: %s cores; %s runs; image %s (busybox base local to both)\n' "$(nproc)" "$RUNS" "$IMAGE"
printf 'pulled image to serving (cantila deploy --follow, first edge answer): median %5d ms  (runs: %s)\n' "$DEPLOY_MEDIAN" "${deploy_times[*]}"
printf 'docker pull + docker run + first HTTP answer (floor):                 median %5d ms  (runs: %s)\n' "$FLOOR_MEDIAN" "${floor_times[*]}"
printf 'ratio cantila/floor: %.2f\n' "$(awk "BEGIN{print $DEPLOY_MEDIAN/$FLOOR_MEDIAN}")"
