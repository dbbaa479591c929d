#!/usr/bin/env bash
# Makes sure a PostgreSQL cluster runs for the database tests: installs Debian's
# `postgresql` when missing, starts a cluster listening on every address (so containers on
# Docker bridge networks reach it through their gateway), allows password logins from
# loopback and the private ranges Docker's bridges use, and creates the `cantila_admin`
# role (CREATEROLE, CREATEDB; not a superuser) the test daemons are configured with.
# Prints the admin URL on stdout as its last line.
set -euo pipefail

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }

if ! command -v pg_lsclusters >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y postgresql >&2 || { apt-get update >&2 && apt-get install -y postgresql >&2; }
fi

version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
    log "creating cluster $version/main"
    pg_createcluster "$version" main >&2
fi
conf_dir="/etc/postgresql/$version/main"
cat > "$conf_dir/conf.d/cantila-test.conf" <<'CONF'
# Written by cantila scripts/ensure-postgres.sh: containers reach the server through the
# gateway address of their Docker network.
listen_addresses = '*'
password_encryption = 'scram-sha-256'
CONF
hba="$conf_dir/pg_hba.conf"
for range in 127.0.0.1/32 172.16.0.0/12 192.168.0.0/16 10.0.0.0/8; do
    line="host    all    all    $range    scram-sha-256"
    grep -qxF "$line" "$hba" || echo "$line" >> "$hba"
done

port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')
status=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $4 }')
if [ "$status" = "online" ]; then
    pg_ctlcluster "$version" main reload >&2
    # listen_addresses needs a restart when it changed.
    if ! su postgres -c "psql -p $port -Atc 'show listen_addresses'" | grep -qx '\*'; then
        pg_ctlcluster "$version" main restart >&2
    fi
else
    log "starting cluster $version/main on port $port"
    pg_ctlcluster "$version" main start >&2
fi
for _ in $(seq 1 50); do
    su postgres -c "psql -p $port -Atc 'select 1'" >/dev/null 2>&1 && break
    sleep 0.2
done
su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -q" >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cantila_admin') THEN
    CREATE ROLE cantila_admin LOGIN CREATEROLE CREATEDB PASSWORD 'cantila-test';
  END IF;
END $$;
SQL
echo "postgres://cantila_admin:cantila-test@127.0.0.1:$port/postgres"
