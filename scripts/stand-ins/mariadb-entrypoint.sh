#!/usr/bin/env bash
# Entrypoint of the locally made mariadb:11 stand-in (scripts/base-images.sh).
# A reduced copy of the official image's docker-entrypoint.sh: the same
# environment (MARIADB_ROOT_PASSWORD, MARIADB_DATABASE, MARIADB_USER,
# MARIADB_PASSWORD, and their MYSQL_* aliases), the same first-start
# initialisation on a server with networking off, and the same drop from root
# to the mysql user.
set -Eeo pipefail

if [ "${1:0:1}" = '-' ]; then
    set -- mariadbd "$@"
fi

if [ "$1" != 'mariadbd' ] && [ "$1" != 'mysqld' ]; then
    exec "$@"
fi

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

if [ "$(id -u)" = '0' ]; then
    mkdir -p "$DATADIR" /run/mysqld
    find "$DATADIR" /run/mysqld \! -user mysql -exec chown mysql:mysql '{}' +
    exec gosu mysql "$BASH_SOURCE" "$@"
fi

: "${MARIADB_ROOT_PASSWORD:=${MYSQL_ROOT_PASSWORD:-}}"
: "${MARIADB_DATABASE:=${MYSQL_DATABASE:-}}"
: "${MARIADB_USER:=${MYSQL_USER:-}}"
: "${MARIADB_PASSWORD:=${MYSQL_PASSWORD:-}}"

# sql_string VALUE: VALUE as a single-quoted SQL string literal.
sql_string() { printf "'%s'" "$(printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/''/g")"; }
# sql_name VALUE: VALUE as a back-quoted SQL identifier.
sql_name() { printf '`%s`' "$(printf '%s' "$1" | sed -e 's/`/``/g')"; }

if [ ! -d "$DATADIR/mysql" ]; then
    if [ -z "$MARIADB_ROOT_PASSWORD" ] && [ -z "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-}" ]; then
        echo 'error: database is uninitialized and password option is not specified' >&2
        echo '       You need to specify one of MARIADB_ROOT_PASSWORD or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD' >&2
        exit 1
    fi
    echo 'Initializing database files'
    mariadb-install-db --datadir="$DATADIR" --skip-test-db --auth-root-authentication-method=normal \
        --skip-name-resolve --default-time-zone=SYSTEM --skip-log-bin >/dev/null
    "$@" --skip-networking --socket="$SOCKET" --default-time-zone=SYSTEM --skip-log-bin &
    pid=$!
    for _ in $(seq 300); do
        mariadb --protocol=socket --socket="$SOCKET" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { echo 'error: temporary server exited' >&2; exit 1; }
        sleep 0.2
    done
    {
        echo "SET @@SESSION.SQL_LOG_BIN=0;"
        echo "DELETE FROM mysql.global_priv WHERE user NOT IN ('mysql', 'mariadb.sys', 'root') OR host NOT IN ('localhost');"
        echo "SET PASSWORD FOR 'root'@'localhost' = PASSWORD($(sql_string "$MARIADB_ROOT_PASSWORD"));"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY $(sql_string "$MARIADB_ROOT_PASSWORD");"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "$MARIADB_DATABASE" ]; then
            echo "CREATE DATABASE IF NOT EXISTS $(sql_name "$MARIADB_DATABASE");"
        fi
        if [ -n "$MARIADB_USER" ] && [ -n "$MARIADB_PASSWORD" ]; then
            echo "CREATE USER $(sql_string "$MARIADB_USER")@'%' IDENTIFIED BY $(sql_string "$MARIADB_PASSWORD");"
            if [ -n "$MARIADB_DATABASE" ]; then
                echo "GRANT ALL ON $(sql_name "$MARIADB_DATABASE").* TO $(sql_string "$MARIADB_USER")@'%';"
            fi
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb --protocol=socket --socket="$SOCKET" -uroot --binary-mode
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"; mariadb --protocol=socket --socket="$SOCKET" -uroot -p"$MARIADB_ROOT_PASSWORD" "${MARIADB_DATABASE:-mysql}" <"$f" ;;
            *) [ -e "$f" ] && echo "ignoring $f" ;;
        esac
    done
    kill "$pid"
    wait "$pid" || true
    echo 'MariaDB init process done. Ready for start up.'
fi

exec "$@"
