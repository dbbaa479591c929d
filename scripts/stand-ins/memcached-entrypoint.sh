#!/bin/sh
# Entrypoint of the locally made memcached:1 stand-in (scripts/base-images.sh).
# Same contract as the official image: options alone run memcached.
set -e

if [ "${1#-}" != "$1" ]; then
    set -- memcached "$@"
fi

exec "$@"
