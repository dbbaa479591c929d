#!/usr/bin/env bash
# A cached rebuild after a one-line change, BuildKit beside the classic builder: the same
# app (a dependency step that takes a few seconds and stays cached, then the app's files)
# deployed by two daemons, one per builder ([build] builder = "auto" and "classic"); each
# deploys it once to warm its cache, then the time of `cantila deploy --follow` for a
# commit changing one line of the app's files is measured, with the build's own time from
# the deploy log's timestamps. One run, same machine, reported with the ratios.
# Needs a Docker engine and the busybox base image (scripts/ensure-docker.sh,
# scripts/base-images.sh). Loopback and the Docker bridge only.
#
#   scripts/bench/buildkit.sh          (CANTILA_BIN=target/debug/cantila skips the release build)
set -euo pipefail
cd "$(dirname "$0")/../.."

. scripts/bench/lib.sh
bench_need_engine
bench_build
bench_workdir

# The app: an "install" step standing for a dependency install (cached while deps.txt is
# unchanged), then the files that change.
APP="$WORK/app"
mkdir -p "$APP/www"
echo "left-pad 1.3.0" >"$APP/deps.txt"
echo "hello" >"$APP/www/index.html"
printf '%s\n' \
    'FROM busybox:latest' \
    'COPY deps.txt /app/deps.txt' \
    'RUN sleep 5 && cp /app/deps.txt /app/installed.txt' \
    'COPY www /www' \
    'EXPOSE 8080' \
    'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]' >"$APP/Dockerfile"
git -C "$APP" init -q -b main
git -C "$APP" add -A
bench_git "$APP" commit -q -m bench

PROJECT_IDS=()
bench_cleanup_extra() {
    for id in "${PROJECT_IDS[@]}"; do
        docker ps -aq --filter "label=cantila.project=$id" | xargs -r docker rm -f >/dev/null 2>&1 || true
        docker images -q --filter "label=cantila.project=$id" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
        docker network ls -q --filter "label=cantila.project=$id" | xargs -r docker network rm >/dev/null 2>&1 || true
    done
}

# The seconds from the deploy log's "building ..." line to the builder's "Successfully
# tagged" (both builders print it), from the stored events (`at` of each log event).
build_secs() {
    local deploy_id=$1
    curl -sf -H "Authorization: Bearer $CANTILA_TOKEN" "$CANTILA_URL/v1/deploys/$deploy_id/events" |
        python3 -c '
import json, sys, datetime
times = []
building = False
for line in sys.stdin:
    if not line.startswith("data:"):
        continue
    event = json.loads(line[5:])
    text = event.get("line", "")
    if text.startswith("building cantila/"):
        building = True
    if building and "at" in event:
        times.append(datetime.datetime.fromisoformat(event["at"].replace("Z", "+00:00")))
    if building and text.startswith("Successfully tagged"):
        break
print("%.2f" % ((times[-1] - times[0]).total_seconds() if len(times) > 1 else float("nan")))
'
}

# `measure BUILDER`: a daemon with that builder deploys the app twice (the second after a
# one-line change); sets DEPLOY_MS and BUILD_S of the second.
measure() {
    local builder=$1 port data
    port=$(free_port)
    data="$WORK/data-$builder"
    mkdir -p "$data"
    printf '[build]\nbuilder = "%s"\n' "$builder" >"$WORK/$builder.toml"
    "$BIN" serve --config "$WORK/$builder.toml" --data-dir "$data" --api-listen "127.0.0.1:$port" \
        --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 >"$WORK/cantila-$builder.log" 2>&1 &
    PIDS+=("$!")
    bench_wait_api "http://127.0.0.1:$port" "$data"
    local id
    id=$("$BIN" projects create "bench-$builder" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    PROJECT_IDS+=("$id")
    "$BIN" git connect "bench-$builder" "$APP" --branch main >/dev/null
    echo "$builder: first deploy (warms the cache)..." >&2
    "$BIN" deploy "bench-$builder" --follow >"$WORK/first-$builder.log" 2>&1

    echo "changed in $builder" >"$APP/www/index.html"
    bench_git "$APP" commit -q -am "one line ($builder)"
    local start
    start=$(now_ms)
    "$BIN" deploy "bench-$builder" --follow >"$WORK/second-$builder.log" 2>&1
    DEPLOY_MS=$(($(now_ms) - start))
    local deploy_id
    deploy_id=$("$BIN" deploys "bench-$builder" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deploys"][0]["id"])')
    BUILD_S=$(build_secs "$deploy_id")
    if [ "$builder" = classic ]; then
        grep -q "building with the classic builder" "$WORK/second-$builder.log" || { echo "the classic run did not use the classic builder" >&2; exit 1; }
    else
        grep -q "building with the classic builder" "$WORK/second-$builder.log" && { echo "BuildKit was not available" >&2; exit 1; }
    fi
    grep -q "RUN sleep 5" "$WORK/second-$builder.log" || { echo "the $builder rebuild printed no steps" >&2; exit 1; }
}

measure auto
BUILDKIT_MS=$DEPLOY_MS BUILDKIT_BUILD_S=$BUILD_S
measure classic
CLASSIC_MS=$DEPLOY_MS CLASSIC_BUILD_S=$BUILD_S

printf '\nmachine: %s cores; engine %s; one run each\n' "$(nproc)" "$(docker version --format '{{.Server.Version}}')"
printf 'rebuild after a one-line change, BuildKit: deploy %6d ms (build %s s)\n' "$BUILDKIT_MS" "$BUILDKIT_BUILD_S"
printf 'rebuild after a one-line change, classic:  deploy %6d ms (build %s s)\n' "$CLASSIC_MS" "$CLASSIC_BUILD_S"
printf 'ratio BuildKit/classic: deploy %.2f, build %.2f\n' \
    "$(awk "BEGIN{print $BUILDKIT_MS/$CLASSIC_MS}")" \
    "$(awk "BEGIN{print $BUILDKIT_BUILD_S/$CLASSIC_BUILD_S}")"
