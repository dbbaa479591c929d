#!/usr/bin/env bash
# The whole test suite, from a fresh clone: starts what the tests need (a Docker engine,
# PostgreSQL, Chromium, an S3-compatible server, a container registry), then checks formatting and lints, then
# runs every unit and integration test, then fuzzes the live API with schemathesis
# (installed from PyPI into a venv when missing), and finally fails if anything of the
# run's test installations is left on the Docker engine.
# A missing component is installed or the run fails; no test skips silently.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# Incremental compilation only pays off on rebuilds, and a fresh clone builds once; its
# caches would double the target dir's size on disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
step "disk space"
df -h . /var/lib 2>/dev/null || df -h .

step "Docker engine"
scripts/ensure-docker.sh

step "pebble (Let's Encrypt's test CA, for the ACME tests)"
if ! command -v pebble >/dev/null || ! command -v pebble-challtestsrv >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y pebble || { apt-get update && apt-get install -y pebble; }
fi

step "Chromium and chromedriver (the console's browser tests)"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y chromium chromium-driver || { apt-get update && apt-get install -y chromium chromium-driver; }
fi

step "tzdata (the IANA time zones of scheduled jobs)"
if [ ! -f /usr/share/zoneinfo/Europe/Paris ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y tzdata || { apt-get update && apt-get install -y tzdata; }
fi

step "schemathesis (PyPI, pinned, in a venv)"
scripts/ensure-schemathesis.sh >/dev/null

step "PostgreSQL (for the database and backup tests)"
CANTILA_TEST_PG_ADMIN_URL=$(scripts/ensure-postgres.sh | tail -n 1)
export CANTILA_TEST_PG_ADMIN_URL

step "S3-compatible server (moto, PyPI, pinned, in a venv; for the backup-upload tests)"
CANTILA_TEST_S3_ENDPOINT=$(scripts/ensure-s3.sh | tail -n 1)
export CANTILA_TEST_S3_ENDPOINT

step "container registry (Debian's docker-registry, htpasswd auth; for the image-source tests)"
CANTILA_TEST_REGISTRY=$(scripts/ensure-registry.sh | tail -n 1)
export CANTILA_TEST_REGISTRY
registry_credentials="${REGISTRY_DIR:-/var/lib/cantila-test-registry}/credentials"
CANTILA_TEST_REGISTRY_USER=$(cut -d: -f1 "$registry_credentials")
CANTILA_TEST_REGISTRY_PASSWORD=$(cut -d: -f2- "$registry_credentials")
export CANTILA_TEST_REGISTRY_USER CANTILA_TEST_REGISTRY_PASSWORD

step "local base images (busybox, node:22-slim, python:3.12-slim, redis:7, postgres:16, mariadb:11, memcached:1)"
scripts/base-images.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

# Test daemons label everything they create with `test-<run>-<random>` (see `TestDir` in
# tests/integration/support.rs) and remove it when their test ends, passed or failed. At
# the end of the run, whatever its outcome, anything of this run still on the engine is
# listed, removed (so a re-run starts clean) and fails the run.
export CANTILA_TEST_RUN="${CANTILA_TEST_RUN:-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')}"
check_leftovers() {
    local status=$?
    step "nothing of this run's test installations is left on the engine (test-$CANTILA_TEST_RUN-*)"
    scripts/leftovers.sh check "$CANTILA_TEST_RUN" || status=1
    exit "$status"
}
trap check_leftovers EXIT

step "cargo test"
cargo test --locked "$@"

# Schema fuzzing of the live daemon against its own OpenAPI document (a few minutes on 2
# cores); SCHEMATHESIS_EXAMPLES raises or lowers the cases per operation.
step "schemathesis against the live daemon"
cargo build --locked
scripts/schemathesis.sh --max-examples "${SCHEMATHESIS_EXAMPLES:-50}"
