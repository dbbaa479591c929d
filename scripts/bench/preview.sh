#!/usr/bin/env bash
# Preview against production: the time from a signed GitHub `pull_request` (opened) webhook
# to the preview's hostname answering with the branch's new content, beside the time from
# a signed `push` webhook to production's hostname answering with main's new content, for
# the same repository and the same kind of change (a fresh build each time: every commit
# changes the served file). Runs alternate, one daemon, same machine; reported as medians
# and their ratio. Needs a Docker engine and the busybox base image
# (scripts/ensure-docker.sh, scripts/base-images.sh). Loopback and the Docker bridge only.
#
#   scripts/bench/preview.sh [--runs 5]
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
bench_need openssl openssl
bench_need_engine
bench_build
bench_workdir

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
git_app() { bench_git "$WORK/app" "$@"; }

# The app: busybox httpd serving one file on 8080.
mkdir -p "$WORK/app/www"
echo "main 0" >"$WORK/app/www/index.html"
bench_busybox_app "$WORK/app"

API_PORT=$(free_port)
HTTP_PORT=$(free_port)
# TLS off: no certificate authority is reachable from here; both paths are plain HTTP.
printf '[tls]\nmode = "off"\n[deploy]\ndrain_secs = 1\nstop_grace_secs = 1\n' >"$WORK/config.toml"
"$BIN" serve --config "$WORK/config.toml" --data-dir "$WORK/data" --base-domain bench.test \
    --api-listen "127.0.0.1:$API_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
    --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
API="http://127.0.0.1:$API_PORT"
bench_wait_api "$API" "$WORK/data" || { cat "$WORK/cantila.log" >&2; exit 1; }
TOKEN=$CANTILA_TOKEN
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H "content-type: application/json" "$@"; }

PROJECT_ID=$(api -X POST "$API/v1/projects" -d '{"name":"bench"}' | json_field '["id"]')
SECRET=$(api -X POST "$API/v1/projects/$PROJECT_ID/git" -d "{\"repo\":\"$WORK/app\",\"branch\":\"main\"}" | json_field '["webhookSecret"]')

# Sends a signed GitHub delivery; prints the answer.
webhook() {
    local event="$1" body="$2"
    local signature
    signature=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
    curl -sf -X POST "$API/v1/projects/$PROJECT_ID/git/webhook" \
        -H "content-type: application/json" -H "x-github-event: $event" \
        -H "x-github-delivery: bench-$RANDOM-$(now_ms)" -H "x-hub-signature-256: sha256=$signature" \
        -d "$body"
}

# Waits until the edge answers `host` with exactly `expected`; fails after 120 s.
wait_served() {
    local host="$1" expected="$2"
    for _ in $(seq 1 12000); do
        if [ "$(curl -s -H "host: $host" "http://127.0.0.1:$HTTP_PORT/" 2>/dev/null)" = "$expected" ]; then
            return 0
        fi
        sleep 0.01
    done
    echo "$host never served '$expected'; log in $WORK/cantila.log" >&2
    exit 1
}

echo "first production deploy (warms the build cache and the mirror)..." >&2
webhook push "{\"ref\":\"refs/heads/main\",\"after\":\"$(git_app rev-parse HEAD)\"}" >/dev/null
wait_served bench.admin.bench.test "main 0"

# Each timed phase starts with the project quiet: a deploy's pipeline ends only after the
# previous release drained and stopped, and deploys of one project (production's and its
# previews') run one at a time, so starting earlier would time that wait (and the old
# release's image pruning), not the deploy itself. Both phases wait alike.
wait_quiet() {
    for _ in $(seq 1 300); do
        if [ "$(docker ps -q --filter "label=cantila.project=$PROJECT_ID" | wc -l)" -le 1 ]; then
            # The pipeline's tail (image pruning after the stop) settles too.
            sleep 2
            return 0
        fi
        sleep 0.1
    done
    echo "the project never settled to one container" >&2
    exit 1
}

production_times=()
preview_times=()
for run in $(seq 1 "$RUNS"); do
    # Production: a new commit on main, pushed.
    echo "main $run" >"$WORK/app/www/index.html"
    git_app commit -q -am "main $run"
    wait_quiet
    start=$(now_ms)
    webhook push "{\"ref\":\"refs/heads/main\",\"after\":\"$(git_app rev-parse HEAD)\"}" >/dev/null
    wait_served bench.admin.bench.test "main $run"
    production_times+=($(( $(now_ms) - start )))

    # Preview: a new branch with a new commit, its pull request opened.
    branch="feature-$run"
    git_app checkout -q -b "$branch"
    echo "preview $run" >"$WORK/app/www/index.html"
    git_app commit -q -am "preview $run"
    sha=$(git_app rev-parse HEAD)
    git_app checkout -q main
    wait_quiet
    start=$(now_ms)
    answer=$(webhook pull_request "{\"action\":\"opened\",\"number\":$run,\"pull_request\":{\"number\":$run,\"head\":{\"ref\":\"$branch\",\"sha\":\"$sha\"},\"base\":{\"ref\":\"main\"}}}")
    wait_served "$branch--bench-admin.bench.test" "preview $run"
    preview_times+=($(( $(now_ms) - start )))
    preview_id=$(echo "$answer" | json_field '["previewId"]')
    webhook pull_request "{\"action\":\"closed\",\"number\":$run,\"pull_request\":{\"number\":$run,\"head\":{\"ref\":\"$branch\",\"sha\":\"$sha\"}}}" >/dev/null
    # The next run starts once the closed preview's containers are gone.
    for _ in $(seq 1 200); do
        [ -z "$(docker ps -aq --filter "label=cantila.preview=$preview_id")" ] && break
        sleep 0.1
    done
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
PRODUCTION_MEDIAN=$(median "${production_times[@]}")
PREVIEW_MEDIAN=$(median "${preview_times[@]}")
printf '\nmachine: %s cores; %s runs; each a fresh build of a busybox app\n' "$(nproc)" "$RUNS"
printf 'push webhook -> production serving the commit:       median %5d ms  (runs: %s)\n' "$PRODUCTION_MEDIAN" "${production_times[*]}"
printf 'pull_request webhook -> preview serving the branch:  median %5d ms  (runs: %s)\n' "$PREVIEW_MEDIAN" "${preview_times[*]}"
printf 'ratio preview/production: %.2f\n' "$(awk "BEGIN{print $PREVIEW_MEDIAN/$PRODUCTION_MEDIAN}")"
