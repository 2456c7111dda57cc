"""End to end: /metrics through gunicorn (3 workers, as `make serve`) on the demo data,
with a bearer token and the headers Prometheus sends.

    .venv/bin/python benchmarks/scrape_e2e.py [--requests 300]

One scraper, then 20 at once; latency is measured by the client from connect to the
last byte, on 127.0.0.1. Scrapes take turns over 20 tokens, as 20 Prometheus servers
would, so the per-principal throttle (120/min) does not answer 429 to a benchmark.
The demo data is seeded once gunicorn runs (gunicorn empties the folder at start).
Every request is bounded (30 s) and so is their number. Prints Markdown.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.servers import Gunicorn, Site  # noqa: E402

# What Prometheus 2.42 sends.
HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
    "User-Agent": "Prometheus/2.42.0",
}


def scrape(url: str, token: str) -> tuple[float, int, int]:
    """(milliseconds, status, body bytes unzipped) of one scrape."""
    request = urllib.request.Request(url, headers={**HEADERS, "Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body, status = response.read(), response.status
            zipped = response.headers.get("Content-Encoding") == "gzip"
    except urllib.error.HTTPError as error:
        return (time.perf_counter() - start) * 1000, error.code, 0
    elapsed = (time.perf_counter() - start) * 1000
    return elapsed, status, len(gzip.decompress(body) if zipped else body)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run(url: str, tokens: list[str], scrapers: int, total: int) -> dict:
    results: list[tuple[float, int, int]] = []
    lock = threading.Lock()
    per_scraper = total // scrapers

    def work() -> None:
        for n in range(per_scraper):
            one = scrape(url, tokens[n % len(tokens)])
            with lock:
                results.append(one)

    threads = [threading.Thread(target=work) for _ in range(scrapers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    seconds = time.perf_counter() - start
    times = [ms for ms, status, _ in results if status == 200]
    return {
        "requests": len(results),
        "errors": sum(1 for _, status, _ in results if status != 200),
        "p50": statistics.median(times),
        "p99": percentile(times, 0.99),
        "max": max(times),
        "rate": len(results) / seconds,
        "bytes": max(size for _, _, size in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tamma-bench-e2e-") as work:
        site = Site.create(Path(work))
        tokens = [site.token(f"prometheus-{n}", "prometheus") for n in range(20)]
        with Gunicorn(site, workers=3) as server:
            site.manage("seed_demo", "--issues", "1000")
            url = server.url("/metrics")
            for n in range(30):  # every worker past its first (cold) scrape
                scrape(url, tokens[n % len(tokens)])
            rows = [(n, run(url, tokens, n, args.requests)) for n in (1, 20)]
    print(f"### /metrics through gunicorn, 3 workers, demo data ({args.requests} scrapes each)\n")
    print("| scrapers at once | p50 ms | p99 ms | max ms | scrapes/s | errors | body bytes |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for scrapers, r in rows:
        print(
            f"| {scrapers} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
            f"{r['rate']:.0f} | {r['errors']} | {r['bytes']:,} |"
        )


if __name__ == "__main__":
    main()
