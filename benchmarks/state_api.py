"""The state API through gunicorn (3 workers, as `make serve`): items per second and
request latency for single items and for batches of 100, then a check that the rows
and /metrics hold exactly what was sent.

    .venv/bin/python benchmarks/state_api.py [--singles 1000] [--batched 20000]

On the database of DATABASE_URL when it is set (benchmarks/run.sh runs it again under
scripts/with-postgres.sh), else on a SQLite file. Four senders post at once, each over
its own connections; requests take turns over 40 orchestrator tokens so the
per-principal throttle (600/min) does not answer 429 to a benchmark (429s are counted
and shown). Rounds: new issues one per request; new issues in batches of 100; the same
issues moved to succeeded in batches of 100 (each a counted transition). Every request
is bounded (60 s) and so is their number. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.servers import Gunicorn, Site  # noqa: E402
from tests.utils import parse  # noqa: E402

SENDERS = 4
TOKENS = 40
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)


def issue(n: int, status: str) -> dict:
    item = {
        "platform": "github",
        "repository": f"bench/repo-{n % 7}",
        "external_id": str(n),
        "issue_type": ("feature", "bug", "refactor")[n % 3],
        "provider": ("anthropic", "openai")[n % 2],
        "priority": ("low", "medium", "high")[n % 3],
        "status": status,
        "created_at": START.isoformat(),
        "observed_at": (START + timedelta(minutes=1 if status == "queued" else 90)).isoformat(),
    }
    if status != "queued":
        item["started_at"] = (START + timedelta(minutes=5)).isoformat()
    return item


def post(url: str, token: str, body: dict) -> tuple[float, int, dict]:
    """(milliseconds, status, answer) of one request."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer, status = json.loads(response.read()), response.status
    except urllib.error.HTTPError as error:
        answer, status = {}, error.code
    return (time.perf_counter() - start) * 1000, status, answer


def send(url: str, tokens: list[str], bodies: list[dict], key: str = "items") -> dict:
    """Post ``bodies`` from SENDERS threads at once; items (``body[key]``) per second,
    latency, and the answers' counts added up."""
    results: list[tuple[float, int, dict]] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        for n in range(offset, len(bodies), SENDERS):
            one = post(url, tokens[n % len(tokens)], bodies[n])
            with lock:
                results.append(one)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(SENDERS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    seconds = time.perf_counter() - start
    times = sorted(ms for ms, _, _ in results)
    answered: dict[str, int] = {}
    for *_, answer in results:
        for name, value in answer.items():
            if isinstance(value, int):
                answered[name] = answered.get(name, 0) + value
    items = sum(len(body[key]) for body in bodies)
    return {
        "requests": len(results),
        "items": items,
        "errors": sum(1 for _, status, _ in results if status not in (200, 201)),
        "p50": statistics.median(times),
        "p99": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
        "rate": items / seconds,
        "answered": answered,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument("--batched", type=int, default=20000)
    args = parser.parse_args()
    database = os.environ.get("DATABASE_URL", "")
    vendor = "PostgreSQL" if database.startswith("postgres") else "SQLite"
    with tempfile.TemporaryDirectory(prefix="tamma-bench-state-") as work:
        env = {"DATABASE_URL": database} if database else {}
        site = Site.create(Path(work), **env)
        tokens = site.tokens("tamma", "orchestrator", TOKENS)
        scraper = site.token("prom", "prometheus")
        with Gunicorn(site, workers=3) as server:
            url = server.url("/api/v1/issues")
            for n in range(30):  # every worker past its first (cold) request
                post(url, tokens[n % TOKENS], {"items": [issue(-1 - n, "queued")]})
            singles = [{"items": [issue(n, "queued")]} for n in range(args.singles)]
            first = args.singles
            numbers = range(first, first + args.batched)
            created = [
                {"items": [issue(n, "queued") for n in numbers[i : i + 100]]}
                for i in range(0, args.batched, 100)
            ]
            moved = [
                {"items": [issue(n, "succeeded") for n in numbers[i : i + 100]]}
                for i in range(0, args.batched, 100)
            ]
            rounds = [
                ("new issues, one per request", send(url, tokens, singles)),
                ("new issues, batches of 100", send(url, tokens, created)),
                ("issues moved to succeeded, batches of 100", send(url, tokens, moved)),
            ]
            samples = parse(server.get("/metrics", scraper).text)
            rows = int(
                site.shell(
                    "from tamma_metrics.models import Issue\n"
                    "print(Issue.objects.filter(repository__startswith='bench/').count())"
                )
            )
    counted = samples.total("tamma_issues_processed_total", outcome="success")
    print(f"### {vendor}: POST /api/v1/issues through gunicorn, 3 workers, {SENDERS} senders\n")
    print("| round | items | requests | items/s | p50 ms/request | p99 ms/request | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rounds:
        print(
            f"| {name} | {r['items']:,} | {r['requests']:,} | {r['rate']:,.0f} | "
            f"{r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} |"
        )
    sent = args.singles + args.batched + 30
    answered = {
        key: sum(r["answered"].get(key, 0) for _, r in rounds)
        for key in ("created", "updated", "unchanged", "stale", "rejected")
    }
    ok = rows == sent and counted == args.batched and answered["created"] == sent - 30
    print(
        f"\nChecked: {rows:,} rows for {sent:,} issues sent; "
        f'tamma_issues_processed_total{{outcome="success"}} = {counted:,.0f} for '
        f"{args.batched:,} transitions; answers {answered}: {'exact' if ok else 'MISMATCH'}."
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
