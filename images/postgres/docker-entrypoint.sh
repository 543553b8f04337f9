#!/usr/bin/env bash
# Initialise PGDATA on first start (superuser POSTGRES_USER with POSTGRES_PASSWORD, database POSTGRES_DB),
# then run the server as the postgres user. The subset of the official image's entrypoint the stack needs.
set -euo pipefail

log() { printf 'postgres-entrypoint: %s\n' "$*"; }

if [[ "${1:-}" != postgres ]]; then
  exec "$@"  # e.g. `bash` or `psql` for debugging
fi
shift

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
  log "ERROR: POSTGRES_PASSWORD is empty; set it (docker-compose.yml passes POSTGRES_PASSWORD)" >&2
  exit 1
fi

cd /var/lib/postgresql  # initdb and postgres must be able to read their working directory
if [[ $(id -u) -eq 0 ]]; then
  as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups)
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
else
  as_postgres=()  # already started as the postgres user
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  log "initialising $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  chown postgres "$pwfile" 2>/dev/null || true
  "${as_postgres[@]}" initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  # Other containers of the compose network connect over TCP, with the password.
  printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  if [[ "$POSTGRES_DB" != postgres ]]; then
    # Single-user mode: no server (and no port) is needed to create the database.
    printf 'CREATE DATABASE "%s";\n' "${POSTGRES_DB//\"/\"\"}" |
      "${as_postgres[@]}" postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  log "initialised"
fi

exec "${as_postgres[@]}" postgres -D "$PGDATA" "$@"
