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

# The official image builds redis-server with protected mode off by default (a container's
# network is its boundary), so a Redis without a password answers its neighbours; the
# packaged binary has it on, so it is turned off here unless the command says otherwise.
if [ "$1" = 'redis-server' ]; then
    case " $* " in
        *protected-mode*) ;;
        *) set -- "$@" --protected-mode no ;;
    esac
fi

exec "$@"
