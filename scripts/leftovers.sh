#!/usr/bin/env bash
# What test installations left on the Docker engine. Every test daemon labels what it
# creates with `cantila.installation=test-<run>-<random>` (tests/integration/support.rs,
# `TestDir`); the test command sets `CANTILA_TEST_RUN` and calls this at the end.
#
#   scripts/leftovers.sh check RUN       lists the containers, images, volumes and networks
#                                        of installations `test-RUN-*`, removes them, and
#                                        exits 1 if there were any (installations of other
#                                        runs are only named: they may be running now)
#   scripts/leftovers.sh remove ID       removes everything of installation ID, quietly
set -euo pipefail

label=cantila.installation

# One line per labelled object: `<kind> <id> <installation> <description>`.
inventory() {
    docker ps -a --filter "label=$label" \
        --format "container {{.ID}} {{.Label \"$label\"}} {{.Names}} ({{.Status}})"
    local images
    images=$(docker images -aq --no-trunc --filter "label=$label" | sort -u)
    if [ -n "$images" ]; then
        # shellcheck disable=SC2086
        docker image inspect --format "image {{.Id}} {{index .Config.Labels \"$label\"}} {{json .RepoTags}}" $images 2>/dev/null || true
    fi
    docker volume ls --filter "label=$label" --format "volume {{.Name}} {{.Label \"$label\"}}"
    docker network ls --filter "label=$label" --format "network {{.ID}} {{.Label \"$label\"}} {{.Name}}"
}

# Removes the objects listed on stdin (`<kind> <id> ...`), containers first.
remove_listed() {
    local listed
    listed=$(cat)
    for kind in container image volume network; do
        local ids
        ids=$(awk -v kind="$kind" '$1 == kind { print $2 }' <<<"$listed")
        [ -n "$ids" ] || continue
        case "$kind" in
            # shellcheck disable=SC2086
            container) docker rm --force --volumes $ids >/dev/null 2>&1 || true ;;
            # shellcheck disable=SC2086
            image) docker rmi --force $ids >/dev/null 2>&1 || true ;;
            # shellcheck disable=SC2086
            volume) docker volume rm $ids >/dev/null 2>&1 || true ;;
            # shellcheck disable=SC2086
            network) docker network rm $ids >/dev/null 2>&1 || true ;;
        esac
    done
}

case "${1:-}" in
    check)
        run="${2:?usage: $0 check RUN}"
        all=$(inventory)
        mine=$(awk -v prefix="test-$run-" 'index($3, prefix) == 1' <<<"$all")
        others=$(awk -v prefix="test-$run-" '$3 ~ /^test-/ && index($3, prefix) != 1' <<<"$all")
        if [ -n "$others" ]; then
            echo "note: other test runs' installations are on the engine (not removed; they may be running):" >&2
            awk '{ print "  " $0 }' <<<"$others" >&2
        fi
        if [ -z "$mine" ]; then
            echo "nothing of this run's test installations (test-$run-*) is left on the engine"
            exit 0
        fi
        echo "this run's test installations left these on the engine:" >&2
        awk '{ print "  " $0 }' <<<"$mine" >&2
        remove_listed <<<"$mine"
        # A removal order can keep an image alive once (a parent before its child).
        remove_listed < <(awk -v prefix="test-$run-" 'index($3, prefix) == 1' <<<"$(inventory)")
        echo "removed them, so a re-run starts clean; the test run fails" >&2
        exit 1
        ;;
    remove)
        id="${2:?usage: $0 remove INSTALLATION}"
        inventory | awk -v id="$id" '$3 == id' | remove_listed
        ;;
    *)
        echo "usage: $0 check RUN | remove INSTALLATION" >&2
        exit 2
        ;;
esac
