#!/usr/bin/env bash
# Run a command with CACHE_URL pointing at a private Redis that is started first and
# stopped (and deleted) afterwards, also when the command fails.
#
#   scripts/with-redis.sh .venv/bin/python -m pytest
set -euo pipefail

[ $# -ge 1 ] || {
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/tamma-redis.XXXXXX)
cleanup() {
  "$here/redis.sh" stop "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CACHE_URL=$("$here/redis.sh" start "$dir")
export CACHE_URL
echo "with-redis: $CACHE_URL"
"$@"
