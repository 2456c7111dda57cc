#!/usr/bin/env bash
# System packages the tests need, installed only when missing (Debian, as root):
# promtool and prometheus, a PostgreSQL server for the second run of the suite,
# chromium for the admin tests, a Pushgateway and collectd (a real StatsD server with
# a Prometheus endpoint) for the push-backend end-to-end tests, Node.js and npm for the
# TypeScript client (clients/typescript: its build and its end-to-end test); Redis (the
# shared cache), VictoriaMetrics (long-term store) and Alertmanager for the several-hosts
# tests.
set -euo pipefail

need=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # admin tests in a real browser
command -v prometheus-pushgateway >/dev/null 2>&1 || need+=(prometheus-pushgateway)
# collectd-core alone lacks the libraries of the statsd and write_prometheus plugins.
if ! command -v collectd >/dev/null 2>&1; then
  need+=(collectd-core)
fi
for lib in libprotobuf-c1 libmicrohttpd12; do
  dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed" || need+=("$lib")
done
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
{ command -v prometheus-alertmanager && command -v amtool; } >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v node >/dev/null 2>&1 || need+=(nodejs)  # the TypeScript client (Node 18+)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: need ${need[*]} (Debian packages); run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # The tests run their own servers on free ports: keep the packages from starting
  # services (Debian's policy-rc.d convention), unless the machine already has a policy.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  echo "bootstrap: installed ${need[*]}"
fi

# Real webhook payloads the tests deliver (tests/test_webhook_corpus.py): octokit's GitHub
# examples, at their pinned version, into .run/npm; nothing when already there.
"$(dirname "$0")/webhook-examples.sh"
