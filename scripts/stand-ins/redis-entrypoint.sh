#!/bin/sh
# Entrypoint of the locally made redis:7 stand-in (scripts/base-images.sh).
# Same contract as the official image's docker-entrypoint.sh: options alone
# run redis-server, and redis-server started as root drops to the redis user
# after taking ownership of the working directory (/data).
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec gosu redis "$0" "$@"
fi

exec "$@"
