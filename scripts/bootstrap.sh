#!/usr/bin/env bash
# System packages the tests need, installed only when missing (Debian, as root):
# promtool (prometheus) and a PostgreSQL server for the second run of the suite.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)

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
