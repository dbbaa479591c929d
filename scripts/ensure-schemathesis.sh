#!/usr/bin/env bash
# Installs schemathesis (pinned) from PyPI into a venv when missing and prints the path of
# its executable. The venv lives outside the checkout so a clean clone reuses it.
#
#   SCHEMATHESIS_VENV=/opt/cantila-tools/venv scripts/ensure-schemathesis.sh
set -euo pipefail

VERSION=4.32.5
VENV="${SCHEMATHESIS_VENV:-/opt/cantila-tools/venv}"
EXE="$VENV/bin/schemathesis"

if [ -x "$EXE" ] && "$EXE" --version 2>/dev/null | grep -qF "version $VERSION"; then
    echo "$EXE"
    exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
fi
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION" >&2
"$EXE" --version >&2
echo "$EXE"
