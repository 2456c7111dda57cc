"""A locked database under gunicorn: every scrape answers within Prometheus' timeout,
verified scrapers keep their metrics, others get 503, and no worker is killed."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.servers import Gunicorn, Site
from tests.utils import parse

TIMEOUT = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}


@pytest.fixture(scope="module")
def server(e2e_site: Site) -> Iterator[Gunicorn]:
    with Gunicorn(e2e_site, workers=3, access_log=True) as started:
        yield started


def test_a_locked_database_blinds_no_verified_scraper_and_kills_no_worker(e2e_site, server):
    token = e2e_site.token("outage-scraper", "prometheus")
    stranger = e2e_site.token("outage-stranger", "prometheus")
    # Every worker checks the scraper's token once while the database answers: requests
    # six at a time, so that every worker takes some (sequential ones tend to reach the
    # same worker), and few of them, to stay within each worker's share of the rate.
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(10):
            statuses = list(pool.map(lambda _: server.get("/metrics", token).status, range(6)))
            assert statuses == [200] * 6
            if len(server.answered_by("/metrics")) == 3:
                break
    assert len(server.answered_by("/metrics")) == 3
    workers = sorted(server.worker_pids())
    holder = sqlite3.connect(e2e_site.database, isolation_level=None, timeout=30)
    holder.execute("BEGIN EXCLUSIVE")  # a writer holding the database
    try:
        answers = []
        locked_at = time.perf_counter()
        # Gauges cached before the lock are served while younger than the scrape timeout
        # (2 s): scrape on until the cache can no longer answer (bounded: 12 scrapes).
        for _ in range(12):
            start = time.perf_counter()
            response = server.get("/metrics", token, headers=TIMEOUT)
            answers.append((response.status, time.perf_counter() - start, response.text))
            if time.perf_counter() - locked_at > 3.0:
                break
        start = time.perf_counter()
        refused = server.get("/metrics", stranger, headers=TIMEOUT)
        refused_seconds = time.perf_counter() - start
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for status, seconds, text in answers:
        assert status == 200
        assert seconds < 2.0
        assert parse(text).names() >= {"tamma_build_info", "process_cpu_seconds_total"}
    last = parse(answers[-1][2])
    assert last.value("tamma_metrics_collector_up", collector="database") == 0
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused_seconds < 2.0
    assert sorted(server.worker_pids()) == workers  # no worker hit gunicorn's timeout
    after = parse(server.get("/metrics", token).text)
    assert after.value("tamma_metrics_collector_up", collector="database") == 1
    assert server.get("/metrics", stranger).status == 200
