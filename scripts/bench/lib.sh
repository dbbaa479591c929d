# Shared by the benchmarks (sourced, not run): tools installed when missing, the release
# binary, a work dir and processes cleaned up on exit, free ports, clocks, the busybox app
# most benchmarks deploy, and waiting for a daemon's API.
#
# A benchmark sets its own `set -euo pipefail` and `cd` to the repository root first, then
# `. scripts/bench/lib.sh`. It may define `bench_cleanup_extra` (run first on exit, while
# the daemon still answers) and set PROJECT_ID (whose containers and images are removed).

# `bench_need COMMAND PACKAGE`: installs PACKAGE from Debian when COMMAND is missing.
bench_need() {
    command -v "$1" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# The engine and the local busybox base image (no registry is reachable to pull one).
bench_need_engine() {
    command -v docker >/dev/null || { echo "needs a Docker engine (scripts/ensure-docker.sh)" >&2; exit 1; }
    docker image inspect busybox:latest >/dev/null 2>&1 || { echo "needs busybox:latest (scripts/base-images.sh)" >&2; exit 1; }
}

# Builds the release binary (extra arguments go to cargo) and sets BIN; CANTILA_BIN=path
# runs that binary instead.
bench_build() {
    if [ -z "${CANTILA_BIN:-}" ]; then
        cargo build --release --locked -q "$@"
    fi
    BIN=${CANTILA_BIN:-${CARGO_TARGET_DIR:-target}/release/cantila}
}

# Sets WORK (a new temporary dir) and PIDS (processes to stop), and removes both on exit
# with PROJECT_ID's containers, images and networks and any container labelled cantila.bench=1.
bench_workdir() {
    WORK=$(mktemp -d)
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra || true; fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    docker ps -aq --filter label=cantila.bench=1 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
    if [ -n "${PROJECT_ID:-}" ]; then
        docker ps -aq --filter "label=cantila.project=$PROJECT_ID" | xargs -r docker rm -f >/dev/null 2>&1 || true
        docker images -q --filter "label=cantila.project=$PROJECT_ID" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
        docker network ls -q --filter "label=cantila.project=$PROJECT_ID" | xargs -r docker network rm >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
now_s() { date +%s.%N; }

# `bench_git DIR ARGS...`: git in DIR with the benchmark's identity.
bench_git() {
    local dir=$1
    shift
    git -C "$dir" -c user.name=bench -c user.email=bench@localhost "$@"
}

# `bench_busybox_app DIR`: a repository (branch main, one commit) with a Dockerfile running
# busybox httpd on 8080 over DIR/www; write www/index.html first, or it gets "hello".
bench_busybox_app() {
    local dir=$1
    mkdir -p "$dir/www"
    [ -e "$dir/www/index.html" ] || echo "hello" >"$dir/www/index.html"
    printf 'FROM busybox:latest\nCOPY www /www\nEXPOSE 8080\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n' >"$dir/Dockerfile"
    git -C "$dir" init -q -b main
    git -C "$dir" add -A
    bench_git "$dir" commit -q -m bench
}

# `bench_wait_api URL DATA_DIR`: waits up to 10 s for the daemon to write its admin token
# and answer; then exports CANTILA_URL and CANTILA_TOKEN for the CLI.
bench_wait_api() {
    local url=$1 data_dir=$2
    for _ in $(seq 1 100); do
        [ -s "$data_dir/admin-token" ] && curl -sf "$url/v1/openapi.json" >/dev/null && break
        sleep 0.1
    done
    curl -sf "$url/v1/openapi.json" >/dev/null || { echo "the daemon at $url did not answer" >&2; return 1; }
    CANTILA_URL=$url
    CANTILA_TOKEN=$(cat "$data_dir/admin-token")
    export CANTILA_URL CANTILA_TOKEN
}
