#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each (default 60 s), starting
# from the committed seeds and the corpus earlier runs grew. Not part of the test command:
# it needs nightly Rust and minutes of CPU. A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script; turn it into a regression unit test.
#
#   scripts/fuzz.sh [--seconds 60] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_EACH=60
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_EACH="$2"; shift 2 ;;
        -h|--help) echo "usage: $0 [--seconds N] [TARGET...]" >&2; exit 0 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(cargo +nightly fuzz list)

# The fuzz crate has its own target dir so it never invalidates the main build's.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
cargo +nightly fuzz build --release

FAILED=()
printf '%-16s %14s %10s %8s\n' target executions exec/s status
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    log=$(mktemp)
    status=ok
    cargo +nightly fuzz run --release "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1 || status=CRASH
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\)/\1/p' "$log" | tail -1)
    printf '%-16s %14s %10s %8s\n' "$target" "${runs:-?}" "${rate:-?}" "$status"
    if [ "$status" != ok ]; then
        FAILED+=("$target")
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 >&2
    fi
    rm -f "$log"
done
[ ${#FAILED[@]} -eq 0 ] || { echo "crashes in: ${FAILED[*]} (inputs in fuzz/artifacts/)" >&2; exit 1; }
