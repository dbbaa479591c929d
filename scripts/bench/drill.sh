#!/usr/bin/env bash
# The disaster drill's time: runs tests/integration/drill.rs (an installation with three
# projects and uploaded backups destroyed, then `cantila admin restore s3://BUCKET/latest`
# on a new data dir, `cantila serve` and `cantila backups restore-latest --wait`) and prints
# the time from the restore's start to every project serving with its data, with the
# restore and the rebuild on their own. Needs Docker, the base images, PostgreSQL and the
# S3-compatible test server: it starts PostgreSQL and moto as `scripts/test.sh` does (run
# scripts/ensure-docker.sh and base-images.sh first). The figures are one run's, on this
# machine.
#
#   scripts/bench/drill.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

CANTILA_TEST_PG_ADMIN_URL=$(scripts/ensure-postgres.sh | tail -n 1)
CANTILA_TEST_S3_ENDPOINT=$(scripts/ensure-s3.sh | tail -n 1)
export CANTILA_TEST_PG_ADMIN_URL CANTILA_TEST_S3_ENDPOINT
export CANTILA_TEST_RUN=${CANTILA_TEST_RUN:-benchdrill}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

# The test's own output (with the `drill:` figures) goes to the log; the last lines of it
# are shown when it fails.
if ! cargo test -q --test integration drill::drill_ -- --nocapture >"$LOG" 2>&1; then
    tail -n 60 "$LOG" >&2
    echo "the drill failed" >&2
    exit 1
fi
# What the drill's installations left (other runs' are only named, so quiet unless it fails).
if ! LEFT=$(scripts/leftovers.sh check "$CANTILA_TEST_RUN" 2>&1); then
    echo "$LEFT" >&2
    exit 1
fi

printf 'machine: %s cores\n' "$(nproc)"
grep '^drill: first deploys ' "$LOG"
grep '^drill: restore ' "$LOG"
# The ratio: from the restore's start to every project serving with its data, over the same
# three projects' first deploys on the original installation (the floor: what setting them
# up again by hand would at least take, without re-entering anything).
FLOOR=$(sed -n 's/^drill: first deploys of the three projects \([0-9.]*\) s.*/\1/p' "$LOG")
RESTORE=$(sed -n 's/.*all projects serving with their data \([0-9.]*\) s.*/\1/p' "$LOG")
awk -v r="$RESTORE" -v f="$FLOOR" 'BEGIN { printf "ratio (restore to all serving / first deploys): %.2f\n", r / f }'
