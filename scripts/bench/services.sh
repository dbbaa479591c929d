#!/usr/bin/env bash
# Services against the raw floor, side by side, one run each (issue 19's closing figures):
# - An add-on: `cantila services add bench redis` (the volume, a sealed password, the
#   container on the project's network, waiting until its readiness check passes) until
#   it returns ready, beside the floor: `docker volume create` + `docker run` of the same
#   redis:7 image with a password and append-only file, on the same network, until
#   `redis-cli ping` answers PONG inside it.
# - A compose file of four services (docs/examples/compose-stack: web + worker + Redis +
#   PostgreSQL, web built from the repository): `cantila deploy` of a fresh project until
#   the web answers through the edge, beside Debian's `docker-compose up -d --build` of the
#   same file until the web answers on its published port. Debian's docker-compose is
#   1.29 (Compose v1, Python), which talks to Engine 20.10 but has no `up --wait`: the
#   floor polls the web instead, which is what `--wait` would add (the web's healthcheck
#   needs Redis and PostgreSQL, so its first answer comes after theirs).
# Each prints the command it timed. Needs Docker, the base images (scripts/base-images.sh:
# python:3.12-slim, redis:7, postgres:16) and installs docker-compose from Debian when
# missing. Loopback and the Docker bridge only.
#
#   scripts/bench/services.sh [--runs 1] [--no-compose]
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=1
COMPOSE=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --no-compose) COMPOSE=0; shift ;;
        *) echo "usage: $0 [--runs N] [--no-compose]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need curl curl
bench_need git git
bench_need python3 python3
bench_need_engine
for image in redis:7 postgres:16 python:3.12-slim; do
    docker image inspect "$image" >/dev/null 2>&1 || { echo "needs $image (scripts/base-images.sh)" >&2; exit 1; }
done
if [ "$COMPOSE" = 1 ]; then
    bench_need docker-compose docker-compose
fi
bench_build
bench_workdir
STACK_PROJECT=""
COMPOSE_NAME="cantilabench$$"
bench_cleanup_extra() {
    if [ "$COMPOSE" = 1 ] && [ -d "$WORK/stack" ]; then
        docker-compose -p "$COMPOSE_NAME" -f "$WORK/stack/compose.yaml" down -v --rmi local >/dev/null 2>&1 || true
    fi
}
# After bench_cleanup has stopped the daemon (whose reconciler would otherwise start the
# service containers again): what both projects and the floor left, volumes included.
services_cleanup() {
    for project in "${PROJECT_ID:-}" "$STACK_PROJECT"; do
        [ -n "$project" ] || continue
        docker ps -aq --filter "label=cantila.project=$project" | xargs -r docker rm -f >/dev/null 2>&1 || true
        docker images -q --filter "label=cantila.project=$project" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
        docker volume ls -q --filter "label=cantila.project=$project" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
        docker network ls -q --filter "label=cantila.project=$project" | xargs -r docker network rm >/dev/null 2>&1 || true
    done
    docker volume ls -q --filter label=cantila.bench=1 | xargs -r docker volume rm -f >/dev/null 2>&1 || true
}
trap 'bench_cleanup; services_cleanup' EXIT

API_PORT=$(free_port)
EDGE_PORT=$(free_port)
BASE_DOMAIN=bench.test
printf '[tls]\nmode = "off"\n\n[deploy]\ndrain_secs = 0\n' >"$WORK/cantila.toml"
"$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" --base-domain "$BASE_DOMAIN" \
    --api-listen "127.0.0.1:$API_PORT" --http-listen "127.0.0.1:$EDGE_PORT" \
    --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

# ---- (a) an add-on until ready, beside docker run + redis-cli ping -------------------
PROJECT_ID=$("$BIN" projects create bench --json | json '["id"]')
NETWORK=""
addon_times=()
floor_times=()
for run in $(seq 1 "$RUNS"); do
    name="cache$run"
    start=$(now_ms)
    "$BIN" services add bench redis --name "$name" >"$WORK/add-$run.log" 2>&1 || { cat "$WORK/add-$run.log" >&2; exit 1; }
    addon_times+=($(( $(now_ms) - start )))
    state=$("$BIN" services list bench --json | python3 -c "
import json, sys
body = json.load(sys.stdin)
services = body['services'] if isinstance(body, dict) else body
print([s for s in services if s['name'] == '$name'][0]['state'])")
    [ "$state" = ready ] || { echo "$name is $state after services add returned" >&2; exit 1; }
    # The floor runs on the same network as the add-on, so both pay for the same bridge.
    if [ -z "$NETWORK" ]; then
        cid=$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" --filter "label=cantila.service=$name" | head -n 1)
        NETWORK=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$cid" | awk '{print $1}')
    fi

    start=$(now_ms)
    docker volume create --label cantila.bench=1 "bench-redis-$$-$run" >/dev/null
    cid=$(docker run -d --label cantila.bench=1 --network "$NETWORK" -v "bench-redis-$$-$run:/data" redis:7 \
        redis-server --requirepass bench-password --appendonly yes)
    until [ "$(docker exec "$cid" redis-cli --no-auth-warning -a bench-password ping 2>/dev/null)" = PONG ]; do sleep 0.02; done
    floor_times+=($(( $(now_ms) - start )))
    docker rm -f "$cid" >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk "BEGIN{printf \"%.2f\", $1/$2}"; }
ADDON=$(median "${addon_times[@]}")
FLOOR=$(median "${floor_times[@]}")

# ---- (b) a four-service compose deploy until the web answers, beside docker-compose ----
if [ "$COMPOSE" = 1 ]; then
    mkdir -p "$WORK/stack"
    cp -r docs/examples/compose-stack/. "$WORK/stack/"
    git -C "$WORK/stack" init -q -b main
    git -C "$WORK/stack" add -A
    bench_git "$WORK/stack" commit -q -m stack
    HOST="stack.admin.$BASE_DOMAIN"

    # docker-compose first: its build warms the engine's layer cache for the same
    # Dockerfile, so Cantila's build of web below starts from the same cache state a
    # second deploy would.
    compose_times=()
    for run in $(seq 1 "$RUNS"); do
        start=$(now_ms)
        docker-compose -p "$COMPOSE_NAME" -f "$WORK/stack/compose.yaml" up -d --build >"$WORK/compose-$run.log" 2>&1 \
            || { tail -n 30 "$WORK/compose-$run.log" >&2; exit 1; }
        port=$(docker-compose -p "$COMPOSE_NAME" -f "$WORK/stack/compose.yaml" port web 3000 | awk -F: '{print $NF}')
        until curl -sf "http://127.0.0.1:$port/" 2>/dev/null | grep -q "^visits:"; do sleep 0.02; done
        compose_times+=($(( $(now_ms) - start )))
        docker-compose -p "$COMPOSE_NAME" -f "$WORK/stack/compose.yaml" down -v >/dev/null 2>&1
    done

    cantila_times=()
    for run in $(seq 1 "$RUNS"); do
        name="stack"
        [ "$run" = 1 ] || name="stack$run"
        STACK_PROJECT=$("$BIN" projects create "$name" --json | json '["id"]')
        "$BIN" git connect "$name" "$WORK/stack" --branch main >/dev/null
        HOST="$name.admin.$BASE_DOMAIN"
        start=$(now_ms)
        "$BIN" deploy "$name" --follow >"$WORK/deploy-$run.log" 2>&1 || { tail -n 30 "$WORK/deploy-$run.log" >&2; exit 1; }
        until curl -sf -H "Host: $HOST" "http://127.0.0.1:$EDGE_PORT/" 2>/dev/null | grep -q "^visits:"; do sleep 0.02; done
        cantila_times+=($(( $(now_ms) - start )))
    done
    DEPLOY=$(median "${cantila_times[@]}")
    COMPOSE_MS=$(median "${compose_times[@]}")
fi

printf '\nmachine: %s cores; %s run(s); %s\n' "$(nproc)" "$RUNS" "$(docker version -f 'engine {{.Server.Version}} (API {{.Server.APIVersion}})')"
printf 'add-on until ready  cantila %6d ms | floor %6d ms | ratio %s  (runs: %s / %s)\n' \
    "$ADDON" "$FLOOR" "$(ratio "$ADDON" "$FLOOR")" "${addon_times[*]}" "${floor_times[*]}"
printf '  cantila: %s services add bench redis --name cache1\n' "$BIN"
printf '  floor:   docker volume create V; docker run -d --network %s -v V:/data redis:7 redis-server --requirepass P --appendonly yes;\n' "$NETWORK"
printf '           docker exec C redis-cli -a P ping until PONG\n'
if [ "$COMPOSE" = 1 ]; then
    printf 'compose, 4 services until the web answers  cantila %6d ms | docker-compose %6d ms | ratio %s  (runs: %s / %s)\n' \
        "$DEPLOY" "$COMPOSE_MS" "$(ratio "$DEPLOY" "$COMPOSE_MS")" "${cantila_times[*]}" "${compose_times[*]}"
    printf '  cantila: %s deploy stack --follow, then GET / through the edge (Host: stack.admin.%s)\n' "$BIN" "$BASE_DOMAIN"
    printf '  floor:   %s up -d --build (%s; no --wait in Compose v1), then GET / on web'"'"'s published port\n' \
        "docker-compose -f docs/examples/compose-stack/compose.yaml" "$(docker-compose version --short)"
fi
