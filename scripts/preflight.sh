#!/usr/bin/env bash
# Before `make run` or `make serve` touches anything (the multiprocess folder, the demo
# database, tokens): refuse when another instance of this checkout is running, or when
# the port (or the metrics port) is taken.
#
#   scripts/preflight.sh HOST PORT [METRICS_PORT]
set -euo pipefail

[ $# -ge 2 ] || {
  echo "usage: $0 HOST PORT [METRICS_PORT]" >&2
  exit 2
}
host=$1
here=$(cd "$(dirname "$0")/.." && pwd)
pidfile="${RUN_DIR:-$here/.run}/instance.pid"  # RUN_DIR: for the tests

if [ -f "$pidfile" ]; then
  read -r pid what <"$pidfile" || true
  # Alive, and still this checkout's server (a pid can be reused by anything else).
  if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null &&
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$here" ]; then
    echo "Another instance of this checkout is running: ${what:-a server} (pid $pid)." >&2
    echo "Stop it first (Ctrl-C in its terminal, or: kill $pid); two instances would share" >&2
    echo "the multiprocess folder and the demo database." >&2
    exit 1
  fi
fi

for port in "${@:2}"; do
  [ -n "$port" ] || continue
  if ! python3 - "$host" "$port" <<'PY'; then
import socket, sys
with socket.socket() as s:
    try:
        s.bind((sys.argv[1], int(sys.argv[2])))
    except OSError:
        sys.exit(1)
PY
    echo "Port $port on $host is in use: stop what listens there, or pick another port," >&2
    echo "e.g. make ${MAKE_TARGET:-run} PORT=$((port + 1))." >&2
    exit 1
  fi
done
