"""A soak: 20 scrapers and continuous ingest against gunicorn whose workers are recycled
every few dozen requests, for SOAK_SECONDS (120 by default, at most 300).

Every request must get a 200 (no 5xx, no 429, no cut connection); afterwards the totals
in /metrics equal what the API acknowledged, what the database holds and the requests
made; the master's and the workers' memory and the multiprocess folder stay flat.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.e2e.events import ai_requests
from tests.e2e.servers import TEXT_0_0_4, Gunicorn, Site
from tests.utils import parse

SECONDS = min(float(os.environ.get("SOAK_SECONDS", "120")), 300.0)
WORKERS, MAX_REQUESTS, JITTER = 3, 60, 20
SCRAPERS, SCRAPE_EVERY = 20, 2.0  # each scraper: 30 a minute, within a worker's share
SENDERS, SEND_EVERY, BATCH = 4, 0.5, 20  # each sender: 120 requests a minute
SAMPLE_EVERY = 5.0
PROMETHEUS_HEADERS = {
    "Accept": f"application/openmetrics-text;version=1.0.0,{TEXT_0_0_4};q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None  # exited meanwhile (recycled)
    return None


@dataclass
class Soak:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    scrape_seconds: list[float] = field(default_factory=list)
    scrapes: int = 0
    posts: int = 0
    counted: int = 0
    pids: set[int] = field(default_factory=set)
    samples: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1


def paced(until: float, every: float, step: Callable[[int], None], offset: float) -> None:
    """Call ``step(n)`` every ``every`` seconds, from ``offset`` on, until ``until``."""
    start, number = time.monotonic() + offset, 0
    while True:
        due = start + number * every
        if due > until:
            return
        time.sleep(max(0.0, due - time.monotonic()))
        step(number)
        number += 1


@pytest.fixture(scope="module")
def server(e2e_site: Site) -> Iterator[Gunicorn]:
    with Gunicorn(
        e2e_site, workers=WORKERS, max_requests=MAX_REQUESTS, max_requests_jitter=JITTER
    ) as started:
        yield started


def test_soak_with_20_scrapers_ingest_and_recycled_workers(e2e_site, server):
    scrapers = e2e_site.tokens("soak-scraper", "prometheus", SCRAPERS)
    senders = e2e_site.tokens("soak-sender", "worker", SENDERS)
    reader = e2e_site.token("soak-reader", "prometheus")
    soak = Soak()
    until = time.monotonic() + SECONDS

    def scraper(token: str) -> Callable[[int], None]:
        def step(_: int) -> None:
            start = time.perf_counter()
            try:
                response = server.get("/metrics", token, headers=PROMETHEUS_HEADERS)
            except OSError as error:
                soak.errors.append(f"scrape: {error!r}")
                return
            with soak.lock:
                soak.scrapes += 1
                soak.scrape_seconds.append(time.perf_counter() - start)
            soak.answered(response.status)

        return step

    def sender(number: int, token: str) -> Callable[[int], None]:
        def step(batch: int) -> None:
            events = ai_requests(f"soak-{number}", batch * BATCH, BATCH)
            try:
                response = server.post_json("/api/v1/events", token, {"events": events})
            except OSError as error:
                soak.errors.append(f"ingest: {error!r}")
                return
            soak.answered(response.status)
            with soak.lock:
                soak.posts += 1
                if response.status == 200:
                    soak.counted += json.loads(response.body)["counted"]

        return step

    def sample(_: int) -> None:
        workers = server.worker_pids()
        files = [e2e_site.multiproc_dir / name for name in e2e_site.metric_files()]
        soak.pids.update(workers)
        soak.samples.append(
            {
                "master": rss_bytes(server.pid),
                "workers": [r for r in map(rss_bytes, workers) if r is not None],
                "files": len(files),
                "folder": sum(path.stat().st_size for path in files if path.exists()),
            }
        )

    jobs = [(scraper(token), SCRAPE_EVERY) for token in scrapers]
    jobs += [(sender(n, token), SEND_EVERY) for n, token in enumerate(senders)]
    jobs.append((sample, SAMPLE_EVERY))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        running = [
            # Spread the starts so the scrapes do not arrive in bursts of twenty.
            pool.submit(paced, until, every, step, offset=n * SCRAPE_EVERY / len(jobs))
            for n, (step, every) in enumerate(jobs)
        ]
        for job in running:
            job.result(timeout=SECONDS + 120)

    # Every request answered 200: no 5xx, no throttling, no connection cut by recycling.
    assert soak.errors == []
    assert dict(soak.statuses) == {200: soak.scrapes + soak.posts}
    recycled = len(soak.pids) - WORKERS
    assert recycled >= SECONDS / 30, soak.pids  # workers really came and went

    # Exact totals: what the API acknowledged, what the database holds, what /metrics
    # says, over every recycled worker.
    samples = parse(server.get("/metrics", reader, headers={"Accept": TEXT_0_0_4}).text)
    assert soak.counted == soak.posts * BATCH
    stored = e2e_site.sql(
        "SELECT COUNT(*) FROM tamma_metrics_ingestedevent WHERE event_id LIKE 'soak-%'"
    )
    assert stored == soak.counted
    models = [f"soak-{n}" for n in range(SENDERS)]
    counted = sum(samples.total("tamma_ai_requests_total", model=model) for model in models)
    assert counted == soak.counted
    responses = "tamma_api_response_duration_seconds_count"
    assert samples.total(responses, endpoint="tamma_metrics:metrics", status_code="200") == (
        soak.scrapes
    )
    assert samples.total(responses, endpoint="tamma_metrics:api-events") == soak.posts

    # Flat: the second half of the run against the first (after a warm-up sample).
    early, late = soak.samples[1 : len(soak.samples) // 2], soak.samples[len(soak.samples) // 2 :]

    def median_of(rows: list[dict], key: Callable[[dict], float]) -> float:
        return statistics.median(key(row) for row in rows)

    def worker_rss(row: dict) -> float:
        return statistics.median(row["workers"])

    master = (median_of(early, lambda r: r["master"]), max(r["master"] for r in late))
    workers = (median_of(early, worker_rss), median_of(late, worker_rss))
    folder = (median_of(early, lambda r: r["folder"]), max(r["folder"] for r in late))
    files = max(r["files"] for r in soak.samples)
    mib = 1 << 20
    assert master[1] <= master[0] * 1.1 + 2 * mib, master
    assert workers[1] <= workers[0] * 1.2, workers
    assert folder[1] <= folder[0] * 1.1, folder
    # Per live worker a counter and a histogram file, one of a worker being replaced,
    # an archive of each, and the files of the commands that made the tokens.
    assert files <= 2 * (WORKERS + 1) + 2 + 2 * len(e2e_site.command_pids), soak.samples

    seconds = sorted(soak.scrape_seconds)
    print(
        f"\nsoak {SECONDS:.0f}s: {soak.scrapes} scrapes, {soak.posts} ingest requests "
        f"({soak.counted} events), {recycled} workers recycled; scrape p50 "
        f"{seconds[len(seconds) // 2] * 1000:.1f} ms p99 "
        f"{seconds[int(len(seconds) * 0.99)] * 1000:.1f} ms; master RSS "
        f"{master[0] / mib:.1f}->{master[1] / mib:.1f} MiB, worker RSS median "
        f"{workers[0] / mib:.1f}->{workers[1] / mib:.1f} MiB, folder "
        f"{folder[0] / mib:.1f}->{folder[1] / mib:.1f} MiB, at most {files} files"
    )
