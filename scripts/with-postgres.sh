#!/usr/bin/env bash
# Run a command with DATABASE_URL pointing at a private PostgreSQL cluster that is
# started first and stopped (and deleted) afterwards, also when the command fails.
#
#   scripts/with-postgres.sh .venv/bin/python -m pytest
set -euo pipefail

[ $# -ge 1 ] || {
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
}
here=$(cd "$(dirname "$0")" && pwd)
# /tmp: the postgres user must reach the folder, and a socket path must stay short.
dir=$(mktemp -d /tmp/tamma-pg.XXXXXX)
chmod 711 "$dir" # the postgres user only passes through
cleanup() {
  "$here/pg.sh" stop "$dir/cluster" || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DATABASE_URL=$("$here/pg.sh" start "$dir/cluster")
export DATABASE_URL
echo "with-postgres: $DATABASE_URL"
"$@"
