#!/usr/bin/env bash
# Logs store benchmark (scripts/bench/logs.sh measures collecting a chatty app's output),
# in one run:
#   1. bulk vs per row: runtime log lines (about 130 bytes, like an access line) written into
#      a file with logs.db's table and settings (WAL, synchronous=NORMAL as log batches
#      commit), one transaction per row beside one per batch of 256 (the edge's flush
#      size); interleaved rounds, medians, rows/s and the ratio;
#   2. the API while logs are written at a high rate: GET /v1/projects p50/p99 (wrk) on a
#      quiet daemon and while wrk drives the edge at a project's hostname (each request is
#      an access line stored in logs.db), interleaved rounds, medians and the p99 ratio,
#      with the access lines stored and the edge's records dropped.
# Loopback only; stops by itself.
#
#   scripts/bench/logstore.sh [--rounds 3] [--duration 6] [--rows 20000] [--skip-api]
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=3
DURATION=6
ROWS=20000
SKIP_API=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --rows) ROWS="$2"; shift 2 ;;
        --skip-api) SKIP_API=1; shift ;;
        *) echo "usage: $0 [--rounds N] [--duration S] [--rows N] [--skip-api]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need sqlite3 sqlite3
bench_need wrk wrk
bench_need curl curl
bench_workdir

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Part 1: the SQL of one file, rows in transactions of `per` rows.
insert_rows() {
    local per=$1 db="$WORK/bulk-$1.db"
    rm -f "$db" "$db-wal" "$db-shm"
    python3 - "$db" "$ROWS" "$per" <<'PY'
import sqlite3, sys, time
path, rows, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None)
db.executescript("""
PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
CREATE TABLE runtime_logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL,
  at_ns INTEGER NOT NULL, instance TEXT NOT NULL, process TEXT NOT NULL, stream TEXT NOT NULL,
  line TEXT NOT NULL, preview_id TEXT, service TEXT);
CREATE INDEX runtime_logs_by_project ON runtime_logs(project_id, seq);
CREATE TABLE runtime_log_usage (project_id TEXT PRIMARY KEY, bytes INTEGER NOT NULL, lines INTEGER NOT NULL);
""")
line = "GET /api/items/42 200 0.4ms host=app.admin.example.com client=203.0.113.9 request_id=req_8f3k2m9x1q"
start = time.perf_counter()
n = 0
while n < rows:
    db.execute("BEGIN IMMEDIATE")
    batch = min(per, rows - n)
    for i in range(batch):
        db.execute("INSERT INTO runtime_logs (project_id, at_ns, instance, process, stream, line) VALUES (?1, ?2, 'edge', 'edge', 'edge', ?3)", ("prj_bench", n + i, line))
    db.execute("INSERT INTO runtime_log_usage (project_id, bytes, lines) VALUES ('prj_bench', ?1, ?2) ON CONFLICT (project_id) DO UPDATE SET bytes = bytes + excluded.bytes, lines = lines + excluded.lines", (batch * (len(line) + 32), batch))
    db.execute("COMMIT")
    n += batch
print(f"{rows / (time.perf_counter() - start):.0f}")
PY
}

echo "== bulk vs per row: $ROWS lines, $ROUNDS interleaved rounds" >&2
: >"$WORK/per-row" ; : >"$WORK/bulk"
for round in $(seq 1 "$ROUNDS"); do
    insert_rows 1 >>"$WORK/per-row"
    insert_rows 256 >>"$WORK/bulk"
    echo "   round $round: per row $(tail -1 "$WORK/per-row") rows/s, batches of 256 $(tail -1 "$WORK/bulk") rows/s" >&2
done
PER_ROW=$(median <"$WORK/per-row")
BULK=$(median <"$WORK/bulk")
printf '%-34s %12s\n' "insert (median rows/s)" ""
printf '%-34s %12.0f\n' "one transaction per row" "$PER_ROW"
printf '%-34s %12.0f\n' "one transaction per 256 (edge)" "$BULK"
printf '%-34s %12.1fx\n' "bulk / per row" "$(echo "$BULK / $PER_ROW" | bc -l)"

[ "$SKIP_API" = 1 ] && exit 0

# Part 2: the daemon, the API quiet and under a flood of access lines.
bench_build
API_PORT=$(free_port)
HTTP_PORT=$(free_port)
"$BIN" serve --data-dir "$WORK/data" --api-listen "127.0.0.1:$API_PORT" \
    --http-listen "127.0.0.1:$HTTP_PORT" --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"
API="http://127.0.0.1:$API_PORT"
for n in $(seq 1 20); do
    curl -sf "$API/v1/projects" -H "Authorization: Bearer $CANTILA_TOKEN" \
        -H 'Content-Type: application/json' -d "{\"name\":\"noisy$n\"}" >/dev/null
done
# A created project's hostname answers its status page through the edge: an access line per
# request, no container needed.
HANDLE=$(curl -sf "$API/v1/account" -H "Authorization: Bearer $CANTILA_TOKEN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["handle"])')
HOST="noisy1.$HANDLE.$(awk -F'"' '/^base_domain/ {print $2}' "$WORK/data/../config.toml" 2>/dev/null || true)"
[ "$HOST" = "noisy1.$HANDLE." ] && HOST="noisy1.$HANDLE.localhost"
cat >"$WORK/api.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $CANTILA_TOKEN"
LUA
cat >"$WORK/edge.lua" <<LUA
wrk.headers["Host"] = "$HOST"
LUA
latency() { # wrk output -> "p50_ms p99_ms"
    awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
        END { print p50, p99 }'
}
stored_lines() { sqlite3 "file:$WORK/data/logs.db?mode=ro" "SELECT count(*) FROM runtime_logs" 2>/dev/null || echo 0; }
: >"$WORK/quiet" ; : >"$WORK/loaded"
echo "== API p99 quiet vs while the edge logs at full speed: $ROUNDS interleaved rounds of ${DURATION}s" >&2
for round in $(seq 1 "$ROUNDS"); do
    wrk -t1 -c4 -d"${DURATION}s" --latency -s "$WORK/api.lua" "$API/v1/projects?limit=20" | latency >>"$WORK/quiet"
    before=$(stored_lines)
    wrk -t1 -c50 -d"$((DURATION + 2))s" -s "$WORK/edge.lua" "http://127.0.0.1:$HTTP_PORT/flood" >"$WORK/edge-$round.txt" &
    EDGE=$!
    sleep 1
    wrk -t1 -c4 -d"${DURATION}s" --latency -s "$WORK/api.lua" "$API/v1/projects?limit=20" | latency >>"$WORK/loaded"
    wait "$EDGE"
    after=$(stored_lines)
    echo "   round $round: quiet p50/p99 $(tail -1 "$WORK/quiet") ms, loaded $(tail -1 "$WORK/loaded") ms; edge $(awk '/Requests\/sec/ {print $2}' "$WORK/edge-$round.txt") req/s, $((after - before)) access lines stored" >&2
done
Q99=$(awk '{print $2}' "$WORK/quiet" | median)
L99=$(awk '{print $2}' "$WORK/loaded" | median)
Q50=$(awk '{print $1}' "$WORK/quiet" | median)
L50=$(awk '{print $1}' "$WORK/loaded" | median)
printf '%-34s %10s %10s\n' "GET /v1/projects (median ms)" "p50" "p99"
printf '%-34s %10.2f %10.2f\n' "quiet" "$Q50" "$Q99"
printf '%-34s %10.2f %10.2f\n' "edge logging at full speed" "$L50" "$L99"
printf '%-34s %21.2fx\n' "p99 loaded / quiet" "$(echo "$L99 / $Q99" | bc -l)"
grep -o 'dropped=[0-9]*' "$WORK/cantila.log" | tail -1 | sed 's/^/edge access records dropped (writer behind): /' || echo "edge access records dropped: none reported"
