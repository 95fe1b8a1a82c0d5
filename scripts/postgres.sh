#!/usr/bin/env bash
# The fleet stack's throwaway PostgreSQL (`make up-fleet`), with Debian's binaries
# (/usr/lib/postgresql/15/bin, package postgresql-15) on 127.0.0.1:$STACK_PORT_POSTGRES.
#   bash scripts/postgres.sh init   create the cluster in $STACK_PG_DIR (once; up.sh calls it):
#                                   superuser and owner "tagwatch", database "tagwatch", password
#                                   auth (scram) with $STACK_VAR/secrets/postgres_password, and
#                                   the private pgpass file ($PGPASSFILE) the stack's processes use
#   bash scripts/postgres.sh run    the server in the foreground (the Procfile's `postgres`)
# initdb and postgres refuse to run as root: as root, both run as the `postgres` system user.
set -euo pipefail
export STACK_FLEET="${STACK_FLEET:-1}"  # the fleet's environment (ports, STACK_PG_DIR, PGPASSFILE)
source "$(dirname "${BASH_SOURCE[0]}")/stack-env.sh"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
data="$STACK_PG_DIR/data"
password_file="$STACK_VAR/secrets/postgres_password"

as_pg() {  # command...: as the postgres system user when root (no fork: signals reach it)
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

init() {
  [ -x "$PG_BIN/initdb" ] || { echo "error: $PG_BIN/initdb not found (apt-get install postgresql-15)" >&2; exit 1; }
  [ -s "$password_file" ] || { echo "error: no $password_file (scripts/make-secrets.sh)" >&2; exit 1; }
  mkdir -p "$STACK_PG_DIR/run"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$STACK_PG_DIR" "$STACK_PG_DIR/run"
    chmod 0700 "$STACK_PG_DIR"
    if ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -w "$STACK_PG_DIR"; then
      echo "error: the postgres user cannot reach $STACK_PG_DIR (a parent directory is private):" \
           "set STACK_VAR or STACK_PG_DIR to a path it can traverse" >&2
      exit 1
    fi
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    echo "creating the fleet's PostgreSQL cluster in $data"
    rm -rf "$data"
    # the password reaches initdb as a file only its user can read, deleted right after
    local pwfile="$STACK_PG_DIR/initdb-password"
    install -m 0600 /dev/null "$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pwfile"
    cat "$password_file" > "$pwfile"
    if ! as_pg "$PG_BIN/initdb" -D "$data" -U tagwatch --pwfile="$pwfile" \
         --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
         >"$STACK_PG_DIR/initdb.log" 2>&1; then
      rm -f "$pwfile"
      echo "error: initdb failed (see $STACK_PG_DIR/initdb.log)" >&2
      tail -n 5 "$STACK_PG_DIR/initdb.log" >&2
      exit 1
    fi
    rm -f "$pwfile"
    # the database, in single-user mode: no server, no port, no connection to authenticate
    echo "CREATE DATABASE tagwatch OWNER tagwatch;" \
      | as_pg "$PG_BIN/postgres" --single -D "$data" postgres >>"$STACK_PG_DIR/initdb.log" 2>&1
  fi
  # libpq's password file (host:port:database:user:password); it ignores one others can read
  (umask 077 && printf '127.0.0.1:*:*:tagwatch:%s\n' "$(sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$password_file" | head -n 1)" > "$PGPASSFILE")
  chmod 0600 "$PGPASSFILE"
}

run() {
  [ -f "$data/PG_VERSION" ] || { echo "error: no cluster in $data: bash scripts/postgres.sh init" >&2; exit 1; }
  exec_args=(-D "$data" -p "$STACK_PORT_POSTGRES" -c listen_addresses=127.0.0.1
             -c unix_socket_directories="$STACK_PG_DIR/run" -c max_connections=200)
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$PG_BIN/postgres" "${exec_args[@]}"
  fi
  exec "$PG_BIN/postgres" "${exec_args[@]}"
}

case "${1:-}" in
  init) init ;;
  run) run ;;
  *) echo "usage: bash scripts/postgres.sh init|run" >&2; exit 2 ;;
esac
