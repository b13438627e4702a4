#!/usr/bin/env bash
# A private PostgreSQL server for the tests, on loopback, from Debian's packages.
#   scripts/pg-test-server.sh start   # fresh cluster; prints the admin URL
#   scripts/pg-test-server.sh stop
#   scripts/pg-test-server.sh url
# Settings: NOTIFYHUB_TEST_PG_PORT (default 25432), NOTIFYHUB_TEST_PG_DIR (default /var/tmp/notifyhub-pg).
# The port sits below Linux's ephemeral range (32768-60999): a port inside it can be held
# for a minute by an outgoing connection in TIME-WAIT (the load generator makes tens of
# thousands), and then PostgreSQL cannot listen on it.
set -euo pipefail

port="${NOTIFYHUB_TEST_PG_PORT:-25432}"
dir="${NOTIFYHUB_TEST_PG_DIR:-/var/tmp/notifyhub-pg}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
url="postgres://postgres@127.0.0.1:${port}/postgres"

if [ -z "$bin" ]; then
  echo "PostgreSQL is not installed: run scripts/install-deps.sh --with-postgres" >&2
  exit 1
fi

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

stop() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  fi
}

case "${1:-start}" in
  start)
    stop
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$dir"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    # Durability is pointless for throw-away test databases; speed is not.
    if ! as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=600" >/dev/null; then
      echo "PostgreSQL did not start; the end of $dir/server.log:" >&2
      tail -n 5 "$dir/server.log" >&2 || true
      if grep -q "Address already in use" "$dir/server.log" 2>/dev/null; then
        echo "Another server holds 127.0.0.1:$port; stop it or pick a free port with NOTIFYHUB_TEST_PG_PORT." >&2
      fi
      exit 1
    fi
    echo "$url"
    ;;
  stop) stop ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
