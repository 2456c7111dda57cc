#!/usr/bin/env bash
# A private, throw-away PostgreSQL cluster for the tests, on 127.0.0.1 and a free port.
#
#   scripts/pg.sh start DIR   initdb DIR/data (trust auth), start it, create database
#                             "tamma", print its DATABASE_URL (also written to DIR/url)
#   scripts/pg.sh stop DIR    stop the cluster started in DIR (fast shutdown)
#
# As root, the server runs as the postgres user (initdb refuses root). The socket
# lives in DIR, so nothing touches /var/run/postgresql or another cluster.
# fsync is off: the data is thrown away after the run.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$2

pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    echo "$PG_BIN"
    return
  fi
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$initdb" ]; then
    echo "pg.sh: no /usr/lib/postgresql/*/bin/initdb; run scripts/bootstrap.sh" >&2
    exit 1
  fi
  dirname "$initdb"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case $action in
  start)
    bin=$(pg_bin)
    if [ "$(id -u)" = 0 ]; then
      install -d -o postgres -g postgres -m 700 "$dir"
    else
      install -d -m 700 "$dir"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    # Another process may take the port between the probe and the bind: try again.
    for _ in 1 2 3; do
      port=$(free_port)
      if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null; then
        as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres tamma
        url="postgres://postgres@127.0.0.1:$port/tamma"
        echo "$url" >"$dir/url"
        echo "$url"
        exit 0
      fi
    done
    cat "$dir/log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
    fi
    ;;
  *)
    usage
    ;;
esac
