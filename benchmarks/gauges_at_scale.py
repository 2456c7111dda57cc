"""Database gauges at scale: seed_demo's insert rate, each gauge query's time, and what
a whole scrape costs with the shared gauge cache cold and warm.

    .venv/bin/python benchmarks/gauges_at_scale.py [--issues 100000]
    scripts/with-postgres.sh .venv/bin/python benchmarks/gauges_at_scale.py

Uses a fresh SQLite file (or DATABASE_URL when set); prints Markdown.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = tempfile.mkdtemp(prefix="tamma-bench-scale-")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{WORK}/db.sqlite3")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", WORK)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from tamma_metrics.conf import app_settings  # noqa: E402
from tamma_metrics.scrape import exposition, queries  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--issues", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    start = time.perf_counter()
    call_command("seed_demo", issues=args.issues, stdout=io.StringIO())
    seconds = time.perf_counter() - start
    print(f"### {connection.vendor}: seed_demo --issues {args.issues:,}\n")
    print(f"{seconds:.1f} s, {args.issues / seconds:,.0f} issues/s (with their PRs, approvals,")
    print("escalations and recorded events)\n")
    print("### Gauge queries (one GROUP BY each)\n")
    print("| family | median ms |")
    print("|---|---:|")
    for name, query in queries.GAUGES.items():
        times = []
        for _ in range(args.repeats):
            begin = time.perf_counter()
            query()
            times.append((time.perf_counter() - begin) * 1000)
        print(f"| {name} | {statistics.median(times):.1f} |")
    scrape_costs(args.repeats)


def _scrape() -> tuple[float, int]:
    # The query log is a bounded deque: once full (a seed with DEBUG on), counting
    # by its length would read 0.
    reset_queries()
    with CaptureQueriesContext(connection) as queries_run:
        begin = time.perf_counter()
        exposition.render()
        elapsed = (time.perf_counter() - begin) * 1000
    return elapsed, len(queries_run.captured_queries)


def scrape_costs(repeats: int) -> None:
    """A whole scrape (all families) with the gauge cache empty, then hit."""
    seconds = app_settings.DATABASE_CACHE_SECONDS
    cold, warm = [], []
    _scrape()  # the folder reader's first, cold read is not what is measured here
    for _ in range(repeats):
        cache.clear()
        cold.append(_scrape())
        warm.append(_scrape())
    print(f"\n### A whole scrape, gauge cache cold and warm (DATABASE_CACHE_SECONDS={seconds})\n")
    print("| gauge cache | median ms | queries |")
    print("|---|---:|---:|")
    for label, runs in (("cold (cache emptied)", cold), ("warm (cache hit)", warm)):
        print(f"| {label} | {statistics.median(ms for ms, _ in runs):.1f} | {runs[0][1]} |")


if __name__ == "__main__":
    main()
