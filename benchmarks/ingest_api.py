"""The events API through gunicorn (3 workers, as `make serve`): events per second and
request latency for single events and for batches of 100, every event with an id, then a
check that /metrics and the stored ids hold exactly what was acknowledged.

    .venv/bin/python benchmarks/ingest_api.py [--singles 1000] [--batched 30000]

On the database of DATABASE_URL when it is set (benchmarks/run.sh runs it again under
scripts/with-postgres.sh), else on a SQLite file. Four senders post at once over 40 worker
tokens (the per-principal throttle is 600/min). Each round is bounded in count, each request
in time (60 s). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.state_api import SENDERS, TOKENS, post, send  # noqa: E402
from tests.e2e.events import ai_request, ai_requests  # noqa: E402
from tests.e2e.servers import Gunicorn, Site  # noqa: E402
from tests.utils import parse  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument("--batched", type=int, default=30000)
    args = parser.parse_args()
    database = os.environ.get("DATABASE_URL", "")
    vendor = "PostgreSQL" if database.startswith("postgres") else "SQLite"
    with tempfile.TemporaryDirectory(prefix="tamma-bench-ingest-") as work:
        env = {"DATABASE_URL": database} if database else {}
        site = Site.create(Path(work), **env)
        tokens = site.tokens("worker", "worker", TOKENS)
        scraper = site.token("prom", "prometheus")
        with Gunicorn(site, workers=3) as server:
            url = server.url("/api/v1/events")
            for n in range(30):  # every worker past its first (cold) request
                post(url, tokens[n % TOKENS], {"events": [ai_request(f"warm-{n}", "warm")]})
            singles = [{"events": [ai_request(f"s-{n:06d}", "bench")]} for n in range(args.singles)]
            batches = [
                {"events": ai_requests("bench-batch", first, 100)}
                for first in range(0, args.batched, 100)
            ]
            rounds = [
                ("events with ids, one per request", send(url, tokens, singles, "events")),
                ("events with ids, batches of 100", send(url, tokens, batches, "events")),
            ]
            samples = parse(server.get("/metrics", scraper).text)
            stored = int(
                site.shell(
                    "from tamma_metrics.models import IngestedEvent\n"
                    "print(IngestedEvent.objects.exclude(event_id__startswith='warm').count())"
                )
            )
    counted = samples.total("tamma_ai_requests_total", model="bench") + samples.total(
        "tamma_ai_requests_total", model="bench-batch"
    )
    print(f"### {vendor}: POST /api/v1/events through gunicorn, 3 workers, {SENDERS} senders\n")
    print("| round | events | requests | events/s | p50 ms/request | p99 ms/request | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rounds:
        print(
            f"| {name} | {r['items']:,} | {r['requests']:,} | {r['rate']:,.0f} | "
            f"{r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} |"
        )
    sent = args.singles + args.batched
    acknowledged = sum(r["answered"].get("counted", 0) for _, r in rounds)
    ok = counted == acknowledged == stored == sent
    print(
        f"\nChecked: {sent:,} events sent, {acknowledged:,} answered counted, "
        f"{stored:,} ids stored, tamma_ai_requests_total = {counted:,.0f}: "
        f"{'exact' if ok else 'MISMATCH'}."
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
