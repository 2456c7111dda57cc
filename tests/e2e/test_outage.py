"""A locked or slow database under gunicorn: every scrape answers within Prometheus'
timeout, verified scrapers keep their metrics, others get 503; an ingest or a login
waits out a short lock and gets 503 from a long one, losing nothing; no worker is
killed.

(A database file moved away is not tried here: a worker's open connection keeps the
old file. ``tests/test_outage.py`` covers it with fresh connections.)"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.events import ai_requests
from tests.e2e.servers import Gunicorn, Site
from tests.servers import Response, http_get
from tests.utils import parse

TIMEOUT = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}
# SQLite's busy timeout (Python's default, 5 s), after which a waiting write fails.
BUSY_TIMEOUT = 5.0


@contextlib.contextmanager
def locked(database: str, *, release_after: float | None = None) -> Iterator[None]:
    """An exclusive lock on the database, as a writer holds while it commits; released
    on leaving, or by a timer after ``release_after`` seconds (a slow database)."""
    holder = sqlite3.connect(database, isolation_level=None, timeout=30, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Lock()

    def release() -> None:
        with released:
            if holder.in_transaction:
                holder.execute("ROLLBACK")

    timer = threading.Timer(release_after, release) if release_after else None
    if timer:
        timer.start()
    try:
        yield
    finally:
        if timer:
            timer.join()
        release()
        holder.close()


def timed(call, *args, **kwargs) -> tuple[Response, float]:
    start = time.perf_counter()
    response = call(*args, **kwargs)
    return response, time.perf_counter() - start


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


def test_an_ingest_waits_out_a_slow_database_and_gets_503_from_a_stuck_one(e2e_site, server):
    token = e2e_site.token("outage-sender", "worker")
    reader = e2e_site.token("outage-reader", "prometheus")
    workers = sorted(server.worker_pids())
    slow, stuck = ai_requests("outage-slow", 0, 20), ai_requests("outage-stuck", 0, 20)

    with locked(e2e_site.database, release_after=1.0):
        waited, waited_seconds = timed(server.post_json, "/api/v1/events", token, {"events": slow})
    with locked(e2e_site.database):
        refused, refused_seconds = timed(
            server.post_json, "/api/v1/events", token, {"events": stuck}
        )
    retried = server.post_json("/api/v1/events", token, {"events": stuck})  # the lock gone

    assert waited.status == 200, waited.text
    assert json.loads(waited.body)["counted"] == 20
    assert refused.status == 503, refused.text
    assert json.loads(refused.body) == {"detail": "The database is unavailable; try again shortly."}
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused_seconds < BUSY_TIMEOUT + 3  # the busy timeout, then an answer
    assert retried.status == 200
    assert json.loads(retried.body)["counted"] == 20  # nothing of the refused batch counted
    stored = "SELECT COUNT(*) FROM tamma_metrics_ingestedevent WHERE event_id LIKE ?"
    assert e2e_site.sql(stored, "outage-%") == 40
    samples = parse(server.get("/metrics", reader).text)
    assert samples.total("tamma_ai_requests_total", model="outage-slow") == 20
    assert samples.total("tamma_ai_requests_total", model="outage-stuck") == 20
    assert sorted(server.worker_pids()) == workers
    print(f"\ningest: slow lock {waited_seconds:.2f}s, stuck lock {refused_seconds:.2f}s")


def login(server: Gunicorn, username: str, password: str) -> Response:
    """The admin login form, as a browser posts it (CSRF cookie and field)."""
    page = server.get("/admin/login/")
    assert page.status == 200
    cookie = re.search(r"csrftoken=([^;]+)", page.headers["Set-Cookie"]).group(1)
    field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    form = {"username": username, "password": password, "csrfmiddlewaretoken": field}
    form["next"] = "/admin/"
    headers = {
        "Cookie": f"csrftoken={cookie}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return http_get(
        server.url("/admin/login/"), headers, data=urllib.parse.urlencode(form).encode()
    )


def test_a_login_waits_out_a_slow_database_and_gets_503_from_a_stuck_one(e2e_site, server):
    password = secrets.token_urlsafe(12)
    e2e_site.shell(
        "from django.contrib.auth.models import User; "
        f"User.objects.create_superuser('outage-admin', password={password!r})"
    )
    workers = sorted(server.worker_pids())
    with locked(e2e_site.database, release_after=1.0):
        slow, slow_seconds = timed(login, server, "outage-admin", password)
    with locked(e2e_site.database):
        stuck, stuck_seconds = timed(login, server, "outage-admin", password)

    assert slow.status == 302, slow.text
    assert slow.headers["Location"] == "/admin/"
    assert stuck.status == 503
    assert int(stuck.headers["Retry-After"]) >= 1
    assert b"Traceback" not in stuck.body and b"DATABASE" not in stuck.body
    assert stuck_seconds < 2 * BUSY_TIMEOUT + 3  # the session and the user: a wait each
    assert login(server, "outage-admin", password).status == 302  # the lock gone
    assert sorted(server.worker_pids()) == workers
    print(f"\nlogin: slow lock {slow_seconds:.2f}s, stuck lock {stuck_seconds:.2f}s")
