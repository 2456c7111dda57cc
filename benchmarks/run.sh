#!/usr/bin/env bash
# make bench: run every benchmark script and write benchmarks/RESULTS.md with the
# machine and the date. Figures are medians and ratios measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/RESULTS.md
{
  echo "# Benchmark results"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Machine: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "- Python: $(.venv/bin/python --version 2>&1 | cut -d' ' -f2); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- The machine is shared and noisy: compare ratios within one run, not across runs."
  for script in benchmarks/[a-z]*.py; do
    echo
    echo "## $(basename "$script" .py)"
    echo
    .venv/bin/python "$script"
  done
  echo
  echo "## gauges_at_scale on PostgreSQL"
  echo
  scripts/with-postgres.sh .venv/bin/python benchmarks/gauges_at_scale.py | grep -v '^with-postgres:'
  echo
  echo "## state_api on PostgreSQL"
  echo
  scripts/with-postgres.sh .venv/bin/python benchmarks/state_api.py | grep -v '^with-postgres:'
  echo
  echo "## ingest_api on PostgreSQL"
  echo
  scripts/with-postgres.sh .venv/bin/python benchmarks/ingest_api.py | grep -v '^with-postgres:'
  echo
  echo "## saves on PostgreSQL"
  echo
  scripts/with-postgres.sh .venv/bin/python benchmarks/saves.py | grep -v '^with-postgres:'
  echo
  cat benchmarks/notes.md
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
