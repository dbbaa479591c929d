#!/usr/bin/env bash
# API benchmark on a store of 1,000 projects, in one run:
#   1. floor: GET /v1/projects (authenticated, one page of 100) beside an axum server
#      answering the same JSON bytes from memory (examples/api_floor.rs, the daemon's own
#      stack: the floor for "one HTTP response of this size here"), ROUNDS interleaved
#      rounds each, medians of requests/s, p50 and p99, CPU per request of each process
#      (from /proc/PID/stat over the round); nginx serving the bytes as a file for scale;
#   2. read mix: list pages, a project by id and by handle/name, its env, its deploys, the
#      account, spread over all 1,000 projects (wrk + Lua);
#   3. mutating mix: create projects, patch runtime hints, set env vars, delete projects
#      (2:2:3:1), each a store transaction with its audit entry (wrk + Lua).
# Reports requests/s, p99 and errors of each, their ratio to the axum floor, and the daemon's
# RSS before the mixes and after them; fails when RSS after exceeds 1.5x before + 8 MiB
# (a leak) or when any mix answered a non-2xx. Loopback only; stops by itself.
#
#   scripts/bench/api.sh [--duration 10] [--connections 10] [--projects 1000] [--rounds 5] [--round-duration 5]
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=10
CONNECTIONS=10
PROJECTS=1000
ROUNDS=5
ROUND_DURATION=5
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --projects) PROJECTS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --round-duration) ROUND_DURATION="$2"; shift 2 ;;
        *) echo "usage: $0 [--duration S] [--connections N] [--projects N] [--rounds N] [--round-duration S]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need wrk wrk
bench_need nginx nginx
bench_need curl curl
bench_build
if [ -z "${CANTILA_BIN:-}" ]; then
    cargo build --release --locked -q --example api_floor
fi
FLOOR_BIN=${CARGO_TARGET_DIR:-target}/release/examples/api_floor
bench_workdir

API_PORT=$(free_port)
NGINX_PORT=$(free_port)
FLOOR_PORT=$(free_port)

"$BIN" serve --data-dir "$WORK/data" --api-listen "127.0.0.1:$API_PORT" \
    --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
CANTILA_PID=$!
PIDS+=("$CANTILA_PID")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"
TOKEN=$CANTILA_TOKEN
API="http://127.0.0.1:$API_PORT"
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$CANTILA_PID/status"; }

# The store: PROJECTS projects with two env vars each, plus as many spare projects for the
# mutating mix to delete (so a delete never hits a missing id). One keep-alive connection.
echo "== filling the store: $PROJECTS projects (+ $PROJECTS to delete)" >&2
python3 - "$API_PORT" "$TOKEN" "$PROJECTS" "$WORK" <<'PY'
import http.client, json, sys
port, token, count, work = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
def call(method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        sys.exit(f"{method} {path}: {response.status} {data!r}")
    return json.loads(data) if data else None
def create(prefix, n):
    return call("POST", "/v1/projects", {"name": f"{prefix}-{n}"})
kept = []
for n in range(count):
    project = create("app", n)
    call("POST", f"/v1/projects/{project['id']}/env", {"vars": {"API_BASE": f"https://api{n}.example.com", "WORKERS": "4"}})
    kept.append((project["id"], project["name"]))
spare = [create("spare", n)["id"] for n in range(count)]
def lua_list(values):
    return "{" + ",".join(json.dumps(v) for v in values) + "}"
with open(f"{work}/ids.lua", "w") as out:
    out.write(f"ids = {lua_list([i for i, _ in kept])}\n")
    out.write(f"names = {lua_list([n for _, n in kept])}\n")
    out.write(f"spare = {lua_list(spare)}\n")
PY
curl -sf "$API/v1/projects?limit=100" -H "Authorization: Bearer $TOKEN" >"$WORK/projects.json"
BODY_BYTES=$(wc -c <"$WORK/projects.json")

cat >"$WORK/read.lua" <<LUA
dofile("$WORK/ids.lua")
local token = "Bearer $TOKEN"
local n = 0
request = function()
    n = n + 1
    local i = (n * 7919) % #ids + 1
    local pick = n % 6
    local path
    if pick == 0 then path = "/v1/projects?limit=100"
    elseif pick == 1 then path = "/v1/projects/" .. ids[i]
    elseif pick == 2 then path = "/v1/projects/by-handle/admin/" .. names[i]
    elseif pick == 3 then path = "/v1/projects/" .. ids[i] .. "/env"
    elseif pick == 4 then path = "/v1/projects/" .. ids[i] .. "/deploys"
    else path = "/v1/account" end
    return wrk.format("GET", path, { ["Authorization"] = token })
end
LUA

cat >"$WORK/mutate.lua" <<LUA
dofile("$WORK/ids.lua")
local token = "Bearer $TOKEN"
local headers = { ["Authorization"] = token, ["Content-Type"] = "application/json" }
local n = 0
local deleted = 0
local run = tostring(math.random(100000, 999999))
request = function()
    n = n + 1
    local i = (n * 7919) % #ids + 1
    local pick = n % 8
    if pick == 7 and deleted < #spare then
        deleted = deleted + 1
        return wrk.format("DELETE", "/v1/projects/" .. spare[deleted], headers)
    elseif pick == 0 or pick == 1 or pick == 7 then
        return wrk.format("POST", "/v1/projects", headers,
            '{"name":"mix-' .. run .. '-' .. n .. '"}')
    elseif pick == 2 or pick == 3 then
        local runtime = (n % 16 < 8) and '"static"' or 'null'
        return wrk.format("PATCH", "/v1/projects/" .. ids[i], headers, '{"runtime":' .. runtime .. '}')
    else
        return wrk.format("POST", "/v1/projects/" .. ids[i] .. "/env", headers,
            '{"vars":{"COUNTER":"' .. n .. '","MIX_' .. (n % 50) .. '":"value ' .. n .. '"}}')
    end
end
LUA

mkdir -p "$WORK/www"
cp "$WORK/projects.json" "$WORK/www/projects.json"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
        default_type application/json;
    }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=("$!")
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$NGINX_PORT/projects.json" >/dev/null && break; sleep 0.1; done
"$FLOOR_BIN" --listen "127.0.0.1:$FLOOR_PORT" --body "$WORK/projects.json" &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$FLOOR_PORT/v1/projects" >/dev/null && break; sleep 0.1; done
cmp -s <(curl -sf "http://127.0.0.1:$FLOOR_PORT/v1/projects?limit=100") "$WORK/projects.json" \
    || { echo "the floor does not answer the page's bytes" >&2; exit 1; }

WRK=(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency)
rate() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99() { awk '/ 99%/ {print $2}' "$1"; }
errors() { # non-2xx responses plus socket errors
    awk '/Non-2xx/ {n += $5} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$1"
}

# CPU ticks (user + system) a process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
p50() { awk '/ 50%/ {print $2}' "$1"; }
to_ms() { # wrk's latency (850.00us, 1.20ms, 1.01s) in milliseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f\n", n }'
}
requests() { awk '/requests in/ {print $1}' "$1"; }
# `round NAME PID URL [wrk args]`: one short run, its CPU per request (µs) appended beside.
round() {
    local name=$1 pid=$2 url=$3 out
    shift 3
    out="$WORK/round-$name-$r.txt"
    local before after
    before=$(ticks "$pid")
    wrk -t1 -c"$CONNECTIONS" -d"${ROUND_DURATION}s" --latency "$@" "$url" >"$out"
    after=$(ticks "$pid")
    awk -v t=$((after - before)) -v hz="$HZ" -v n="$(requests "$out")" \
        'BEGIN { printf "%.1f\n", (n > 0 ? t / hz * 1e6 / n : 0) }' >"$out.cpu"
}
median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
column_of() { # name what -> the medians over the rounds
    local name=$1 what=$2
    for f in "$WORK"/round-"$name"-*.txt; do
        case "$what" in
            rate) rate "$f" ;;
            p50) to_ms "$(p50 "$f")" ;;
            p99) to_ms "$(p99 "$f")" ;;
            cpu) cat "$f.cpu" ;;
            errors) errors "$f" ;;
        esac
    done | median
}

sleep 2
RSS_BEFORE_KB=$(rss_kb)
echo "== $ROUNDS interleaved rounds of ${ROUND_DURATION}s: cantila GET /v1/projects?limit=100 ($BODY_BYTES bytes), the axum floor" >&2
for r in $(seq 1 "$ROUNDS"); do
    round cantila "$CANTILA_PID" "$API/v1/projects?limit=100" -H "Authorization: Bearer $TOKEN"
    round floor "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT/v1/projects?limit=100"
done
cp "$WORK/round-cantila-1.txt" "$WORK/wrk-cantila.txt"
echo "== nginx static file, same bytes" >&2
"${WRK[@]}" "http://127.0.0.1:$NGINX_PORT/projects.json" >"$WORK/wrk-nginx.txt"
echo "== read mix over $PROJECTS projects" >&2
"${WRK[@]}" -s "$WORK/read.lua" "$API" >"$WORK/wrk-read.txt"
echo "== mutating mix (create, patch, env set, delete)" >&2
"${WRK[@]}" -s "$WORK/mutate.lua" "$API" >"$WORK/wrk-mutate.txt"
sleep 2
RSS_AFTER_KB=$(rss_kb)
PROJECTS_AFTER=$(python3 - "$API_PORT" "$TOKEN" <<'PY'
import http.client, json, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
count, cursor = 0, None
while True:
    conn.request("GET", "/v1/projects?limit=200" + (f"&cursor={cursor}" if cursor else ""),
                 headers={"Authorization": f"Bearer {sys.argv[2]}"})
    page = json.loads(conn.getresponse().read())
    count += len(page["projects"])
    cursor = page["nextCursor"]
    if not cursor:
        break
print(count)
PY
)

NGINX_RATE=$(rate "$WORK/wrk-nginx.txt")
mib() { awk "BEGIN{printf \"%.1f\", $1/1024}"; }
ratio() { awk "BEGIN{printf \"%.2f\", $1/$FLOOR_RATE}"; }
row() { # label file
    printf '%-34s %10s req/s  p99 %8s  errors %5s  ratio to the axum floor %s\n' "$1" "$(rate "$2")" "$(p99 "$2")" "$(errors "$2")" "$(ratio "$(rate "$2")")"
}
printf '\nmachine: %s cores; wrk -t1 -c%s -d%ss; store %s projects (+%s spare); page body %s bytes\n' \
    "$(nproc)" "$CONNECTIONS" "$DURATION" "$PROJECTS" "$PROJECTS" "$BODY_BYTES"
FLOOR_RATE=$(column_of floor rate)
CANTILA_RATE=$(column_of cantila rate)
printf '\nGET /v1/projects?limit=100, medians of %s interleaved rounds of %ss (wrk -t1 -c%s):\n' "$ROUNDS" "$ROUND_DURATION" "$CONNECTIONS"
printf '%-26s %10s %9s %9s %12s %8s\n' "" "req/s" "p50 ms" "p99 ms" "CPU/req µs" "ratio"
for name in floor cantila; do
    label=$([ "$name" = floor ] && echo "axum from memory (floor)" || echo "cantila")
    printf '%-26s %10s %9s %9s %12s %8s\n' "$label" "$(column_of "$name" rate)" "$(column_of "$name" p50)" \
        "$(column_of "$name" p99)" "$(column_of "$name" cpu)" "$(awk "BEGIN{printf \"%.2f\", $(column_of "$name" rate)/$FLOOR_RATE}")"
done
printf 'cantila / floor: %s (goal >= 0.30, p99 <= 3 ms)\n\n' "$(awk "BEGIN{printf \"%.2f\", $CANTILA_RATE/$FLOOR_RATE}")"
printf '%-34s %10s req/s  p99 %8s\n' "nginx static, same bytes" "$NGINX_RATE" "$(p99 "$WORK/wrk-nginx.txt")"
row "cantila read mix" "$WORK/wrk-read.txt"
row "cantila mutating mix" "$WORK/wrk-mutate.txt"
printf 'projects after the mixes: %s\n' "$PROJECTS_AFTER"
BOUND_KB=$(awk "BEGIN{printf \"%d\", $RSS_BEFORE_KB*1.5 + 8*1024}")
printf 'cantila RSS before load:  %6s MiB\ncantila RSS after load:   %6s MiB (bound %s MiB = 1.5x before + 8 MiB)\n' \
    "$(mib "$RSS_BEFORE_KB")" "$(mib "$RSS_AFTER_KB")" "$(mib "$BOUND_KB")"

STATUS=0
if [ "$RSS_AFTER_KB" -gt "$BOUND_KB" ]; then
    echo "FAIL: RSS grew past the bound (a leak?)" >&2
    STATUS=1
fi
for mix in cantila read mutate; do
    if [ "$(errors "$WORK/wrk-$mix.txt")" != 0 ]; then
        echo "FAIL: $mix answered errors; the daemon log's last lines:" >&2
        grep -v ' status=2' "$WORK/cantila.log" | tail -5 >&2
        STATUS=1
    fi
done
exit "$STATUS"
