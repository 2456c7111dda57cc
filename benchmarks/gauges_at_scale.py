"""Database gauges and reports at scale: seed_demo's insert rate, each gauge query's time,
what a whole scrape costs with the shared gauge cache cold and warm, and the velocity,
delivery and health reports (function, API and page) with their query counts at 1,000 issues and at
the full size.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    call_command("seed_roles", stdout=io.StringIO())
    call_command("seed_demo", issues=1_000, stdout=io.StringIO())
    few = report_queries()
    start = time.perf_counter()
    call_command("seed_demo", issues=args.issues, stdout=io.StringIO())
    seconds = time.perf_counter() - start
    print(f"### {connection.vendor}: seed_demo --issues {args.issues:,}\n")
    added = args.issues - 1_000
    print(f"{seconds:.1f} s for the last {added:,}, {added / seconds:,.0f} issues/s (with their")
    print("PRs, approvals, escalations and recorded events)\n")
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
    report_costs(args.repeats, few, args.issues)


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


def _clients() -> dict[str, Any]:
    """A staff product manager's browser session and an API token of the same user."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from tamma_metrics.models import ApiToken

    user, _ = User.objects.get_or_create(username="bench-pm", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="product-manager"))
    browser = Client(HTTP_HOST="127.0.0.1")
    browser.force_login(user)
    token = ApiToken.create_for(user, "bench")[1]
    api = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
    return {"page": browser, "api": api}


def _cases() -> dict[str, Callable[[], Any]]:
    from tamma_metrics.reports import delivery, health, velocity

    clients = _clients()

    def get(client: str, path: str, *, cached: bool = True) -> Callable[[], Any]:
        def call() -> None:
            # Without the report cache every request computes the report anew. (Set on
            # the settings object itself: override_settings would reset every cache.)
            app_settings.__dict__["REPORTS_CACHE_SECONDS"] = 60 if cached else 0
            try:
                response = clients[client].get(path)
            finally:
                app_settings.__dict__.pop("REPORTS_CACHE_SECONDS", None)
            assert response.status_code == 200, (path, response.status_code)

        return call

    return {
        "velocity(), 30 days": lambda: velocity.velocity(velocity.Filters(days=30)),
        "velocity(), 90 days, provider=anthropic": lambda: velocity.velocity(
            velocity.Filters(days=90, provider="anthropic")
        ),
        "GET /api/v1/velocity?days=30, computed": get(
            "api", "/api/v1/velocity?days=30", cached=False
        ),
        "GET /api/v1/velocity?days=30, report cache": get("api", "/api/v1/velocity?days=30"),
        "GET /reports/velocity/?days=30 (page), computed": get(
            "page", "/reports/velocity/?days=30", cached=False
        ),
        "GET /reports/velocity/?days=30 (page), report cache": get(
            "page", "/reports/velocity/?days=30"
        ),
        "delivery(), 30 days": lambda: delivery.delivery(30),
        "delivery(), 90 days": lambda: delivery.delivery(90),
        "GET /api/v1/delivery?days=30, computed": get(
            "api", "/api/v1/delivery?days=30", cached=False
        ),
        "GET /api/v1/delivery?days=30, report cache": get("api", "/api/v1/delivery?days=30"),
        "GET /reports/delivery/?days=30 (page), computed": get(
            "page", "/reports/delivery/?days=30", cached=False
        ),
        "GET /reports/delivery/?days=30 (page), report cache": get(
            "page", "/reports/delivery/?days=30"
        ),
        "health()": health.health,
        "GET /api/v1/health": get("api", "/api/v1/health"),
        "GET /reports/health/ (page)": get("page", "/reports/health/"),
    }


def report_queries() -> dict[str, int]:
    """The number of queries of each report case at the current size (after one call,
    so that sessions, tokens and visibility are as in steady use)."""
    counts = {}
    for name, call in _cases().items():
        call()
        reset_queries()
        with CaptureQueriesContext(connection) as run:
            call()
        counts[name] = len(run.captured_queries)
    return counts


def report_costs(repeats: int, few: dict[str, int], issues: int) -> None:
    """Each report's median time at the full size, and its queries at both sizes."""
    cases = _cases()
    many = report_queries()
    print(f"\n### Reports at {issues:,} issues\n")
    print(f"| report | median ms | p95 ms | queries at 1,000 | queries at {issues:,} |")
    print("|---|---:|---:|---:|---:|")
    for name, call in cases.items():
        call()  # warm: templates compiled, connections open, the report cache filled
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            call()
            times.append((time.perf_counter() - begin) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        print(
            f"| {name} | {statistics.median(times):.1f} | {p95:.1f} | {few[name]} | {many[name]} |"
        )


if __name__ == "__main__":
    main()
