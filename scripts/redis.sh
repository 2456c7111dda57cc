#!/usr/bin/env bash
# A private, throw-away Redis for the tests, on 127.0.0.1 and a free port.
#
#   scripts/redis.sh start DIR   start redis-server with its files in DIR, print its
#                                CACHE_URL (also written to DIR/url)
#   scripts/redis.sh stop DIR    stop the server started in DIR
#
# No persistence (the data is thrown away), no protected-mode surprises: it binds
# 127.0.0.1 only.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$2

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case $action in
  start)
    command -v redis-server >/dev/null || {
      echo "redis.sh: no redis-server; run scripts/bootstrap.sh" >&2
      exit 1
    }
    mkdir -p "$dir"
    # Another process may take the port between the probe and the bind: try again.
    for _ in 1 2 3; do
      port=$(free_port)
      redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/log" || continue
      for _ in $(seq 100); do
        if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
          url="redis://127.0.0.1:$port/0"
          echo "$url" >"$dir/url"
          echo "$url"
          exit 0
        fi
        sleep 0.1
      done
      [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    done
    cat "$dir/log" >&2 || true
    exit 1
    ;;
  stop)
    if [ -f "$dir/redis.pid" ]; then
      pid=$(cat "$dir/redis.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || exit 0
        sleep 0.1
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
    ;;
  *)
    usage
    ;;
esac
