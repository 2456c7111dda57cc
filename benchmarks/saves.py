"""What the receivers add to a model save that changes an issue's status, in one run.

The same Issue row is saved with its status moving (in_progress, queued, in_progress, ...)
with the app's receivers connected, and with them disconnected; each save in its own
transaction (autocommit), on a SQLite file (or DATABASE_URL). Medians over the repeats.

    .venv/bin/python benchmarks/saves.py [--saves 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tamma-bench-"))
if "DATABASE_URL" not in os.environ:
    os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='tamma-bench-')}/db.sqlite3"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Model  # noqa: E402
from django.db.models.signals import post_save  # noqa: E402

from tamma_metrics import receivers  # noqa: E402
from tamma_metrics.models import Issue  # noqa: E402

STATUSES = ("in_progress", "queued")


def per_save_us(issue: Issue, saves: int) -> float:
    start = time.perf_counter_ns()
    for n in range(saves):
        issue.status = STATUSES[n % 2]
        issue.save()
    return (time.perf_counter_ns() - start) / saves / 1000


def disconnected():
    """What the app adds to a save off (as if tamma_metrics were not installed): the
    receiver, and the status condition in the UPDATE (Django's own update instead of
    ``StatusTracked``'s); then back on."""
    post_save.disconnect(dispatch_uid=f"tamma_{Issue.__name__}", sender=Issue)
    Issue._do_update = Model._do_update  # type: ignore[method-assign]

    def reconnect() -> None:
        del Issue._do_update
        post_save.connect(
            receivers.count_transition, sender=Issue, dispatch_uid=f"tamma_{Issue.__name__}"
        )

    return reconnect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    issue = Issue.objects.create(
        platform="github", repository="bench/saves", external_id="1", issue_type="bug",
        provider="anthropic", status="queued",
    )  # fmt: skip
    per_save_us(issue, 200)  # warm both paths
    with_receivers, without = [], []
    for _ in range(args.repeats):
        with_receivers.append(per_save_us(issue, args.saves))
        reconnect = disconnected()
        try:
            without.append(per_save_us(issue, args.saves))
        finally:
            reconnect()
    on, off = statistics.median(with_receivers), statistics.median(without)
    vendor = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    print(f"### {vendor}: an Issue save that changes its status ({args.saves} x {args.repeats})\n")
    print("| receivers | median µs/save |")
    print("|---|---:|")
    print(f"| connected | {on:,.0f} |")
    print(f"| disconnected | {off:,.0f} |")
    print(f"\nThe receivers add **{on - off:,.0f} µs** per status-changing save (target: 60).")


if __name__ == "__main__":
    main()
