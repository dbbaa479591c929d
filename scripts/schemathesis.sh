#!/usr/bin/env bash
# Schema fuzzing of the live API: starts a real `cantila serve` on a free port over a temp
# data dir, gives it something to find (a project connected to a local git repository of a
# fixture app, a deploy, a project of a second account), mints read, deploy and admin
# tokens of one account and an admin token of another, and runs schemathesis on
# /v1/openapi.json with every check, every phase (examples, coverage, fuzzing, stateful)
# and the four identities. Streaming endpoints (SSE, followed logs) are excluded: a
# response that never ends cannot be checked. So are the WebSocket attaches (`/attach`):
# a plain GET is answered 426 before any look-up, and schemathesis cannot upgrade;
# tests/integration/terminal.rs covers them. Exits non-zero on any failure.
#
#   scripts/schemathesis.sh [--binary PATH] [--max-examples N] [--seed N] [--report DIR]
#
# The operation list comes from the served document, so endpoints added later are tested
# without editing this script. `scripts/test.sh` runs it; schemathesis comes from
# scripts/ensure-schemathesis.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

BINARY="${CARGO_TARGET_DIR:-target}/debug/cantila"
MAX_EXAMPLES=25
SEED=""
REPORT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) BINARY="$2"; shift 2 ;;
        --max-examples) MAX_EXAMPLES="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        --report) REPORT_DIR="$2"; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--max-examples N] [--seed N] [--report DIR]" >&2; exit 2 ;;
    esac
done

SCHEMATHESIS=$(scripts/ensure-schemathesis.sh)
[ -x "$BINARY" ] || { echo "no cantila binary at $BINARY; run cargo build first or pass --binary" >&2; exit 1; }

WORK=$(mktemp -d)
DAEMON_PID=""
# A test installation's id (see tests/integration/support.rs), so that what the fuzzer made
# on the engine (containers, images, volumes) is found and removed by label afterwards.
INSTALLATION="test-${CANTILA_TEST_RUN:-local}-schemathesis$$"
cleanup() {
    if [ -n "$DAEMON_PID" ]; then
        kill "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    scripts/leftovers.sh remove "$INSTALLATION" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port)
API="http://127.0.0.1:$API_PORT"
DATA="$WORK/data"

# The fuzzer sends thousands of requests with bad tokens on purpose (ignored_auth), so the
# per-address throttle is lifted; everything else is the default configuration.
cat >"$WORK/cantila.toml" <<TOML
data_dir = "$DATA"
api_listen = "127.0.0.1:$API_PORT"
http_listen = "127.0.0.1:0"
https_listen = "127.0.0.1:0"
base_domain = "fuzz.test"

[api]
auth_failures_per_minute = 1000000

[tls]
mode = "off"
TOML

mkdir -p "$DATA"
printf '%s' "$INSTALLATION" >"$DATA/installation-id"
"$BINARY" serve --config "$WORK/cantila.toml" >"$WORK/cantila.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 300); do
    [ -s "$DATA/admin-token" ] && curl -sf "$API/v1/openapi.json" >/dev/null && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/cantila.log" >&2; echo "daemon exited during start-up" >&2; exit 1; }
    sleep 0.1
done
curl -sf "$API/v1/openapi.json" >/dev/null || { cat "$WORK/cantila.log" >&2; echo "daemon did not start" >&2; exit 1; }

admin() { "$BINARY" admin --config "$WORK/cantila.toml" "$@"; }
ADMIN_TOKEN=$(cat "$DATA/admin-token")
DEPLOY_TOKEN=$(admin token create --account admin --scope deploy --name fuzz-deploy)
READ_TOKEN=$(admin token create --account admin --scope read --name fuzz-read)
admin account create other >/dev/null
OTHER_TOKEN=$(admin token create --account other --scope admin --name fuzz-other)

api() { # token method path [json]
    local args=(-sS -f -X "$2" "$API$3" -H "Authorization: Bearer $1")
    [ $# -gt 3 ] && args+=(-H 'Content-Type: application/json' -d "$4")
    curl "${args[@]}"
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

# A local repository of a fixture app, so git, plan and deploy operations have real ids.
REPO="$WORK/repo"
cp -r tests/fixtures/apps/static-root "$REPO"
git -C "$REPO" init -q -b main
git -C "$REPO" -c user.name=fuzz -c user.email=fuzz@localhost add -A
git -C "$REPO" -c user.name=fuzz -c user.email=fuzz@localhost commit -q -m fixture

PROJECT_ID=$(api "$ADMIN_TOKEN" POST /v1/projects '{"name":"fuzz-site"}' | json_field '["id"]')
api "$ADMIN_TOKEN" POST "/v1/projects/$PROJECT_ID/git" "{\"repo\":\"$REPO\",\"branch\":\"main\"}" >/dev/null
api "$ADMIN_TOKEN" POST "/v1/projects/$PROJECT_ID/env" '{"vars":{"GREETING":"hello","API_KEY":{"value":"s3cret","secret":true}}}' >/dev/null
api "$ADMIN_TOKEN" POST "/v1/projects/$PROJECT_ID/aliases" '{"hostname":"www.fuzz-site.example"}' >/dev/null
DEPLOY_ID=$(api "$ADMIN_TOKEN" POST "/v1/projects/$PROJECT_ID/deploy" '{}' | json_field '["deployId"]')
SECOND_PROJECT_ID=$(api "$DEPLOY_TOKEN" POST /v1/projects '{"name":"fuzz-api","runtime":"static"}' | json_field '["id"]')
OTHER_PROJECT_ID=$(api "$OTHER_TOKEN" POST /v1/projects '{"name":"other-site"}' | json_field '["id"]')
OTHER_DEPLOY_ID=$(api "$OTHER_TOKEN" POST "/v1/projects/$OTHER_PROJECT_ID/deploy" '{}' | json_field '["deployId"]')

# Identities in the order schemathesis tries them per operation: the least scope first, so
# read, deploy and admin each serve the operations they are the least scope for; `other`
# (another account's admin) is a peer of `admin` for the object-level authorization check.
cat >"$WORK/auth.json" <<JSON
{
  "auth": [
    {"name": "read", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $READ_TOKEN"}]},
    {"name": "deploy", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $DEPLOY_TOKEN"}]},
    {"name": "admin", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $ADMIN_TOKEN"}]},
    {"name": "other", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $OTHER_TOKEN"}]}
  ]
}
JSON
# Half the generated ids are ones that exist (this account's and the other account's, which
# must answer 404 like a random one), so operations get past "no such project" often.
cp scripts/schemathesis.toml "$WORK/schemathesis.toml"
cat >>"$WORK/schemathesis.toml" <<TOML

[dictionaries.known-ids]
values = ["$PROJECT_ID", "$SECOND_PROJECT_ID", "$DEPLOY_ID", "$OTHER_PROJECT_ID", "$OTHER_DEPLOY_ID"]

[dictionaries.known-hostnames]
values = ["www.fuzz-site.example", "api.fuzz-site.example"]

[parameters]
"path.id" = { dictionary = "known-ids", probability = 0.5 }
"body.projectId" = { dictionary = "known-ids", probability = 0.5 }
"body.deployId" = { dictionary = "known-ids", probability = 0.5 }
"path.hostname" = { dictionary = "known-hostnames", probability = 0.5 }
"body.hostname" = { dictionary = "known-hostnames", probability = 0.3 }

[auth.wfc]
path = "$WORK/auth.json"
peers = ["admin", "other"]
TOML

REPORT_DIR="${REPORT_DIR:-$WORK/report}"
mkdir -p "$REPORT_DIR"
ARGS=(
    --checks all
    # `--checks all` re-enables what the config turns off: see scripts/schemathesis.toml.
    --exclude-checks ensure_resource_availability
    --phases examples,coverage,fuzzing,stateful
    --max-examples "$MAX_EXAMPLES"
    --workers 1
    --request-timeout 30
    --suppress-health-check all
    --generation-database none
    --exclude-path-regex '(/deploy/stream$|/events$|/logs|/attach$)'
    --report junit,ndjson --report-dir "$REPORT_DIR"
    --no-color
)
[ -n "$SEED" ] && ARGS+=(--seed "$SEED")
echo "schemathesis: project $PROJECT_ID, other account's project $OTHER_PROJECT_ID, report in $REPORT_DIR" >&2
STATUS=0
"$SCHEMATHESIS" --config-file "$WORK/schemathesis.toml" run "$API/v1/openapi.json" "${ARGS[@]}" || STATUS=$?

if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
    echo "the daemon died during the run; its log:" >&2
    tail -50 "$WORK/cantila.log" >&2
    exit 1
fi
if grep -q 'panicked' "$WORK/cantila.log"; then
    echo "the daemon log records a panic:" >&2
    grep -B2 -A10 'panicked' "$WORK/cantila.log" >&2
    exit 1
fi
exit "$STATUS"
