#!/usr/bin/env bash
# Entrypoint of the locally made postgres:16 stand-in (scripts/base-images.sh).
# A reduced copy of the official image's docker-entrypoint.sh: the same
# environment (POSTGRES_PASSWORD, POSTGRES_USER, POSTGRES_DB, PGDATA,
# POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD), the same first-start
# initialisation (initdb, a password, the database, scripts in
# /docker-entrypoint-initdb.d, all on a server that listens on no TCP port)
# and the same drop from root to the postgres user.
set -Eeo pipefail

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
    exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = '0' ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 00700 "$PGDATA"
    chmod 03775 /var/run/postgresql
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chown postgres:postgres /var/run/postgresql
    exec gosu postgres "$BASH_SOURCE" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != 'trust' ]; then
        echo 'error: database is uninitialized and superuser password is not specified.' >&2
        echo '       You must specify POSTGRES_PASSWORD to a non-empty value for the superuser.' >&2
        exit 1
    fi
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as upstream.
    initdb --username="$user" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") ${POSTGRES_INITDB_ARGS:-}
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    export PGPASSWORD="${POSTGRES_PASSWORD:-}"
    if [ "$db" != 'postgres' ]; then
        psql -v ON_ERROR_STOP=1 --username "$user" --no-password --dbname postgres --set db="$db" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --username "$user" --no-password --dbname "$db" -f "$f" ;;
            *) [ -e "$f" ] && echo "ignoring $f" ;;
        esac
    done
    unset PGPASSWORD
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@"
