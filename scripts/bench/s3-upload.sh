#!/usr/bin/env bash
# Upload of a volume backup to S3-compatible storage, against the raw floor, in one run:
# the daemon's upload ([backups.s3]: a pass for SHA-256 and per-part MD5s, the streamed
# PUT or multipart upload with Content-MD5, then the HEAD that verifies size, SHA-256 and
# ETag; the `millis` of its "backup uploaded and verified" log line) beside `curl -T` of the
# same file to the same server (one PUT, no checks), and beside boto3's `upload_file` (what
# `aws s3 cp` runs: multipart above 8 MiB, 10 threads). The server is moto on loopback
# (scripts/ensure-s3.sh), so absolute figures are moto's; compare the ratios.
# Medians of N runs. Needs Docker and the busybox base image. Loopback only.
#
#   scripts/bench/s3-upload.sh [--runs 3] [--mb 50] [--part-mb 64]
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=3
MB=50
PART_MB=64
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --mb) MB="$2"; shift 2 ;;
        --part-mb) PART_MB="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--mb N] [--part-mb N]" >&2; exit 2 ;;
    esac
done

ENDPOINT=$(scripts/ensure-s3.sh | tail -n 1)
PY="${MOTO_VENV:-/opt/cantila-tools/s3-venv}/bin/python"
. scripts/bench/lib.sh
bench_need_engine
bench_build
bench_workdir
bench_cleanup_extra() {
    if [ -n "${CANTILA_TOKEN:-}" ]; then
        "$BIN" volumes delete bench files --confirm bench >/dev/null 2>&1 || true
    fi
    # moto keeps objects in memory: the bench's bucket goes with it.
    if [ -n "${BUCKET:-}" ]; then
        "$PY" - "$ENDPOINT" "$BUCKET" <<'PYTHON' || true
import sys, boto3
endpoint, bucket = sys.argv[1:]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for item in page.get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])
client.delete_bucket(Bucket=bucket)
PYTHON
    fi
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
mbps() { python3 -c "print(f'{$1 / 1048576 / ($2 / 1000):.1f}')"; }

BUCKET="cantila-bench-$(date +%s)"
curl -sf -X PUT -H 'Content-Length: 0' "$ENDPOINT/$BUCKET" >/dev/null

API_PORT=$(free_port)
cat >"$WORK/cantila.toml" <<TOML
[tls]
mode = "off"

[backups.s3]
enabled = true
endpoint = "$ENDPOINT"
bucket = "$BUCKET"
path_style = true
access_key_id = "testing"
part_size_mb = $PART_MB
TOML
CANTILA_BACKUP_S3_SECRET_ACCESS_KEY=testing "$BIN" serve --config "$WORK/cantila.toml" --data-dir "$WORK/data" \
    --api-listen "127.0.0.1:$API_PORT" --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 >"$WORK/cantila.log" 2>&1 &
PIDS+=("$!")
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"

"$BIN" projects create bench >/dev/null
"$BIN" volumes create bench files --mount /srv/files >/dev/null
VOLUME=$("$BIN" volumes list bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["volumes"][0]["dockerVolume"])')
docker run --rm --network none -v "$VOLUME:/v" busybox:latest dd if=/dev/urandom of=/v/blob bs=1M count="$MB" 2>/dev/null

cantila_times=(); curl_times=(); boto_times=()
for run in $(seq 1 "$RUNS"); do
    ID=$("$BIN" backups create bench --volume files --json | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]; assert b["status"]=="completed", b; print(b["id"])')
    for _ in $(seq 1 600); do
        STATUS=$(curl -sf -H "Authorization: Bearer $CANTILA_TOKEN" "$CANTILA_URL/v1/backups/$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["remote"]["status"])')
        [ "$STATUS" != pending ] && break
        sleep 0.1
    done
    [ "$STATUS" = uploaded ] || { echo "upload of $ID ended $STATUS" >&2; exit 1; }
    MS=$(grep "backup uploaded and verified" "$WORK/cantila.log" | grep -F "$ID" | sed -E 's/.*millis=([0-9]+).*/\1/')
    cantila_times+=("$MS")
    FILE=$(ls "$WORK/data/backups/"*/"$ID".tar)
    BYTES=$(stat -c %s "$FILE")

    start=$(now_ms)
    curl -sf -T "$FILE" "$ENDPOINT/$BUCKET/raw/curl-$run.tar" >/dev/null
    curl_times+=($(( $(now_ms) - start )))

    start=$(now_ms)
    "$PY" - "$ENDPOINT" "$BUCKET" "$FILE" "raw/boto-$run.tar" <<'PYTHON'
import sys, boto3
endpoint, bucket, path, key = sys.argv[1:]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
client.upload_file(path, bucket, key)
PYTHON
    boto_times+=($(( $(now_ms) - start )))
done

C=$(median "${cantila_times[@]}"); U=$(median "${curl_times[@]}"); B=$(median "${boto_times[@]}")
printf '\nmachine: %s cores; %s runs; backup file %s MiB; part size %s MiB; server: moto on loopback\n' \
    "$(nproc)" "$RUNS" "$((BYTES / 1048576))" "$PART_MB"
printf 'cantila upload+verify %6d ms (%s MiB/s) | curl -T %6d ms | ratio %s\n' "$C" "$(mbps "$BYTES" "$C")" "$U" "$(ratio "$C" "$U")"
printf 'cantila upload+verify %6d ms            | boto3 upload_file (aws s3 cp) %6d ms | ratio %s\n' "$C" "$B" "$(ratio "$C" "$B")"
printf 'runs (ms): cantila %s; curl %s; boto3 %s\n' "${cantila_times[*]}" "${curl_times[*]}" "${boto_times[*]}"
