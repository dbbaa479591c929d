#!/usr/bin/env bash
# Backup and restore throughput through the daemon against the raw floor, in one run:
# - PostgreSQL: `cantila backups create --database` (pg_dump custom format, then fsync,
#   SHA-256 and rename, recorded through the API) beside a bare `pg_dump --format=custom`
#   of the same database; `cantila backups restore` (a safety dump first, then
#   pg_restore --clean --single-transaction) beside a bare pg_dump + pg_restore.
# - A volume: `cantila backups create --volume` (a tar read through the engine's archive
#   API with the project's containers paused) beside `docker run busybox tar -c` of the
#   same volume to a file, and beside `tar -c` of the volume's directory on the host (the
#   floor; needs root, which Cantila itself never needs).
# Medians of N runs, and their ratios. Needs Docker, the busybox base image and
# scripts/ensure-postgres.sh's cluster. Loopback and the Docker bridge only.
#
#   scripts/bench/backup.sh [--runs 3] [--rows 500000] [--volume-mb 200]
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=3
ROWS=500000
VOLUME_MB=200
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --rows) ROWS="$2"; shift 2 ;;
        --volume-mb) VOLUME_MB="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--rows N] [--volume-mb N]" >&2; exit 2 ;;
    esac
done

ADMIN_URL=$(scripts/ensure-postgres.sh 2>/dev/null | tail -n 1)
. scripts/bench/lib.sh
bench_need_engine
bench_build
bench_workdir
bench_cleanup_extra() {
    if [ -n "${CANTILA_TOKEN:-}" ]; then
        "$BIN" db delete bench --confirm bench >/dev/null 2>&1 || true
        "$BIN" volumes delete bench files --confirm bench >/dev/null 2>&1 || true
    fi
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

API_PORT=$(free_port)
printf '[tls]\nmode = "off"\n\n[database.postgres]\nadmin_url = "%s"\n' "$ADMIN_URL" >"$WORK/cantila.toml"
"$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" --api-listen "127.0.0.1:$API_PORT" \
    --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"

"$BIN" projects create bench >/dev/null
"$BIN" db create bench --engine postgres >/dev/null
eval "$("$BIN" db credentials bench --json | python3 -c '
import json, sys
env = json.load(sys.stdin)["env"]
for key in ("PGDATABASE", "PGUSER", "PGPASSWORD"):
    print(f"export {key}={env[key]}")')"
# The daemon reaches the server where the admin URL says; so does the raw floor.
export PGHOST=127.0.0.1 PGPORT=$(python3 -c "from urllib.parse import urlparse; print(urlparse('$ADMIN_URL').port or 5432)")
psql -q -v ON_ERROR_STOP=1 -c "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b, now() AS at FROM generate_series(1, $ROWS) g; CREATE INDEX ON items (a);"
DB_BYTES=$(psql -Atc "SELECT pg_database_size(current_database())")

"$BIN" volumes create bench files --mount /srv/files >/dev/null
VOLUME=$("$BIN" volumes list bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["volumes"][0]["dockerVolume"])')
docker run --rm --network none -v "$VOLUME:/v" busybox:latest sh -c \
    "for i in \$(seq 1 $((VOLUME_MB / 10))); do dd if=/dev/urandom of=/v/blob\$i bs=1M count=10 2>/dev/null; done"

MOUNTPOINT=$(docker volume inspect -f '{{.Mountpoint}}' "$VOLUME")
dump_times=(); raw_dump_times=(); restore_times=(); raw_restore_times=(); tar_times=(); raw_tar_times=(); host_tar_times=()
for _ in $(seq 1 "$RUNS"); do
    start=$(now_ms)
    ID=$("$BIN" backups create bench --database --json | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]; assert b["status"]=="completed", b; print(b["id"])')
    dump_times+=($(( $(now_ms) - start )))
    DUMP_BYTES=$("$BIN" backups list bench --json | python3 -c "import json,sys; print([b for b in json.load(sys.stdin)['backups'] if b['id']=='$ID'][0]['sizeBytes'])")

    start=$(now_ms)
    pg_dump --format=custom --no-password --file="$WORK/raw.pgdump"
    raw_dump_times+=($(( $(now_ms) - start )))

    start=$(now_ms)
    "$BIN" backups restore "$ID" --confirm bench >/dev/null
    restore_times+=($(( $(now_ms) - start )))

    # The floor of a restore with a safety copy first: dump, then restore.
    start=$(now_ms)
    pg_dump --format=custom --no-password --file="$WORK/safety.pgdump"
    pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction --exit-on-error --no-password --dbname="$PGDATABASE" "$WORK/raw.pgdump"
    raw_restore_times+=($(( $(now_ms) - start )))

    start=$(now_ms)
    "$BIN" backups create bench --volume files --json | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]; assert b["status"]=="completed", b' 
    tar_times+=($(( $(now_ms) - start )))

    start=$(now_ms)
    docker run --rm --network none -v "$VOLUME:/v" busybox:latest tar -c -C /v . >"$WORK/raw.tar"
    sync "$WORK/raw.tar"
    raw_tar_times+=($(( $(now_ms) - start )))

    start=$(now_ms)
    tar -c -C "$MOUNTPOINT" -f "$WORK/host.tar" .
    sync "$WORK/host.tar"
    host_tar_times+=($(( $(now_ms) - start )))
done

D=$(median "${dump_times[@]}"); RD=$(median "${raw_dump_times[@]}")
R=$(median "${restore_times[@]}"); RR=$(median "${raw_restore_times[@]}")
T=$(median "${tar_times[@]}"); RT=$(median "${raw_tar_times[@]}"); HT=$(median "${host_tar_times[@]}")
mbps() { python3 -c "print(f'{$1 / 1048576 / ($2 / 1000):.1f}')"; }
printf '\nmachine: %s cores; %s runs; database %s MiB on disk (%s rows), dump %s MiB; volume %s MiB\n' \
    "$(nproc)" "$RUNS" "$((DB_BYTES / 1048576))" "$ROWS" "$((DUMP_BYTES / 1048576))" "$VOLUME_MB"
printf 'postgres backup   cantila %6d ms | raw pg_dump              %6d ms | ratio %s  (%s MiB/s of database)\n' "$D" "$RD" "$(ratio "$D" "$RD")" "$(mbps "$DB_BYTES" "$D")"
printf 'postgres restore  cantila %6d ms | raw pg_dump + pg_restore %6d ms | ratio %s\n' "$R" "$RR" "$(ratio "$R" "$RR")"
printf 'volume backup     cantila %6d ms | raw docker run tar       %6d ms | ratio %s  (%s MiB/s)\n' "$T" "$RT" "$(ratio "$T" "$RT")" "$(mbps $((VOLUME_MB * 1048576)) "$T")"
printf 'volume backup     cantila %6d ms | host tar of the directory %5d ms | ratio %s\n' "$T" "$HT" "$(ratio "$T" "$HT")"
printf 'runs (ms): backup %s / %s; restore %s / %s; volume %s / %s / %s\n' \
    "${dump_times[*]}" "${raw_dump_times[*]}" "${restore_times[*]}" "${raw_restore_times[*]}" "${tar_times[*]}" "${raw_tar_times[*]}" "${host_tar_times[*]}"
