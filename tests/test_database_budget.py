"""Database gauges under load: a time budget per scrape, and a shared cache per family.

A down, slow or locked database must not cost the scrape: /metrics answers 200 with
the in-process families within the budget, leaves the gauges out and says so in
``tamma_metrics_collector_up{collector="database"}``; the caller's transaction stays
usable. Cached gauges spare the database the load of many workers, hosts and scrapers.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import types

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm

from tamma_metrics import budget, labels, views
from tamma_metrics.models import ApiToken, Issue, MetricFamily
from tamma_metrics.scrape import collectors, queries
from tests import factories
from tests.utils import parse, run_on_sqlite_file, run_python, scrape

POSTGRES = connection.vendor == "postgresql"
only_postgres = pytest.mark.skipif(not POSTGRES, reason="PostgreSQL run only")
only_sqlite = pytest.mark.skipif(POSTGRES, reason="SQLite run only")
TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"


def _up(samples) -> float:
    return samples.value("tamma_metrics_collector_up", collector="database")


def _duration(samples) -> float:
    return samples.value("tamma_metrics_collector_duration_seconds", collector="database")


def _statement_timeout_ms(executed: CaptureQueriesContext) -> int:
    """The statement_timeout the budget set for the gauges' queries (PostgreSQL)."""
    found = [
        re.search(r"set_config\('statement_timeout', '(\d+)ms', true\)", query["sql"])
        for query in executed.captured_queries
    ]
    values = [int(match.group(1)) for match in found if match]
    assert values, "no statement_timeout was set"
    return max(values)


def _timeout_setting() -> str:
    """The connection's own statement or busy timeout (what must survive a scrape)."""
    with connection.cursor() as cursor:
        if POSTGRES:
            cursor.execute("SHOW statement_timeout")
        else:
            cursor.execute("PRAGMA busy_timeout")
        return str(cursor.fetchone()[0])


# --- the budget ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("10", 10.0), ("0.5", 0.5), (None, None), ("", None), ("soon", None), ("-1", None),
     ("0", None), ("nan", None), ("inf", None)],
)  # fmt: skip
def test_scrape_timeout_header_is_parsed_strictly(raw, expected, rf):
    headers = {} if raw is None else {"X-Prometheus-Scrape-Timeout-Seconds": raw}
    assert views.scrape_timeout(rf.get("/metrics", headers=headers)) == expected


def test_budget_is_a_share_of_the_scrape_timeout_capped_by_the_setting(settings):
    assert budget.database_budget(None) == 5
    assert budget.database_budget(2.0) == 1.6
    assert budget.database_budget(10.0) == 5
    settings.TAMMA_METRICS = {"DATABASE_BUDGET_SECONDS": 0.25}
    assert budget.database_budget(None) == 0.25
    assert budget.database_budget(10.0) == 0.25


@pytest.mark.django_db
@pytest.mark.parametrize(("header", "expected"), [("2", 1.6), ("60", 5.0), ("x", 5.0), (None, 5.0)])
def test_the_scrape_header_sets_the_budget_of_the_queries(client, monkeypatch, header, expected):
    seen = []
    real = budget.time_limited

    def spy(seconds, **kwargs):
        seen.append(seconds)
        return real(seconds, **kwargs)

    monkeypatch.setattr(budget, "time_limited", spy)
    # The budgets' clock stands still: what each block is given, not how long one took.
    monkeypatch.setattr(budget, "time", types.SimpleNamespace(monotonic=lambda: 0.0))
    headers = {TIMEOUT_HEADER: header} if header is not None else {}
    samples = scrape(client, **headers)
    # One budget for the scrape: authentication takes what it needs of it, the gauges get
    # what is left; then the middleware's recording: the label policy check and the
    # admissions of new labels, each within the policy's own short wait.
    authentication, gauges, *recording = seen
    assert authentication == gauges == expected
    assert recording
    assert recording == [labels.POLICY_QUERY_SECONDS] * len(recording)
    assert _up(samples) == 1


@pytest.mark.django_db
def test_a_spent_budget_leaves_the_gauges_out_and_runs_no_more_queries(metrics, monkeypatch):
    metrics()  # the caller is verified once; with no time left, that verification answers
    monkeypatch.setattr(budget, "database_budget", lambda scrape_timeout=None: 0.0)
    with CaptureQueriesContext(connection) as run:
        samples = metrics()
    assert _up(samples) == 0
    assert not samples.series("tamma_queue_depth")
    assert not [q for q in run.captured_queries if "GROUP BY" in q["sql"]]
    assert samples.series("tamma_build_info")


# --- a failed query leaves the request's transaction usable -------------------------


@pytest.mark.django_db
def test_a_failing_query_leaves_the_transaction_and_timeout_intact(client, monkeypatch):
    factories.issue()
    before = _timeout_setting()

    def broken() -> dict:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM tamma_no_such_table")
        return {}

    monkeypatch.setitem(queries.GAUGES, "pending_approvals", broken)
    samples = scrape(client)  # runs inside the test's transaction, like ATOMIC_REQUESTS
    assert _up(samples) == 0
    assert not samples.series("tamma_active_autonomous_loops")
    # PostgreSQL would answer "current transaction is aborted" had the savepoint not
    # been rolled back; the connection's timeout is the one it had before.
    assert Issue.objects.count() == 1
    assert _timeout_setting() == before


@pytest.mark.django_db
def test_a_successful_scrape_puts_the_timeout_back(metrics):
    before = _timeout_setting()
    assert _up(metrics(**{TIMEOUT_HEADER: "1"})) == 1
    assert _timeout_setting() == before


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_limit_ends_with_its_own():
    before = _timeout_setting()
    with budget.time_limited(0.5) as before_query:
        before_query()
        assert _timeout_setting() != before  # the limit is in force inside
    assert _timeout_setting() == before


@pytest.mark.django_db
def test_a_failure_is_remembered_until_the_database_answers_again():
    with pytest.raises(budget.BudgetExhausted), budget.time_limited(0.0) as before_query:
        before_query()
    assert budget.failed_recently()  # best-effort work leaves the database alone now
    with budget.time_limited(1.0) as before_query:
        before_query()
        Issue.objects.count()
    assert not budget.failed_recently()  # it answered: ask it again at once


# --- locked, slow or down -----------------------------------------------------------


@only_postgres
@pytest.mark.django_db
def test_postgres_lock_makes_the_scrape_answer_within_the_budget(client):
    import psycopg

    # The lock conflicts with any row lock of this test's transaction: write no issue yet.
    params = connection.settings_dict
    holder = psycopg.connect(
        host=params["HOST"], port=params["PORT"], user=params["USER"], dbname=params["NAME"]
    )
    try:
        holder.execute("SET lock_timeout = '10s'")
        holder.execute("LOCK TABLE tamma_metrics_issue IN ACCESS EXCLUSIVE MODE")
        with CaptureQueriesContext(connection) as executed:
            response = client.get("/metrics", **{TIMEOUT_HEADER: "2"})
    finally:
        holder.rollback()
        holder.close()
    assert response.status_code == 200
    samples = parse(response.content.decode())
    assert _up(samples) == 0
    assert not samples.series("tamma_queue_depth")
    assert samples.series("tamma_build_info")
    # The lock wait was cut by the database at the budget: 0.8 of Prometheus' 2 s.
    assert 0 < _statement_timeout_ms(executed) <= 1600
    factories.issue()  # the test's transaction is still usable
    assert Issue.objects.count() == 1
    samples = scrape(client)
    assert _up(samples) == 1
    assert samples.value("tamma_queue_depth", queue_type="issues", priority="medium") == 1


@only_postgres
@pytest.mark.django_db
def test_postgres_slow_query_is_cancelled_at_the_deadline(client, monkeypatch):
    def slow() -> dict:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(30)")
        return {}

    monkeypatch.setitem(queries.GAUGES, "queue_depth", slow)
    with CaptureQueriesContext(connection) as executed:
        samples = scrape(client, **{TIMEOUT_HEADER: "0.5"})
    # pg_sleep(30) was cancelled by the database at the budget (0.8 of 0.5 s).
    assert 0 < _statement_timeout_ms(executed) <= 400
    assert _up(samples) == 0
    assert _timeout_setting() == "0"


@only_sqlite
@pytest.mark.django_db
def test_sqlite_slow_query_is_interrupted_at_the_deadline(client, monkeypatch):
    def endless() -> dict:
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                "SELECT count(*) FROM c"
            )
        return {}

    monkeypatch.setitem(queries.GAUGES, "queue_depth", endless)
    # An endless query: the scrape answers only because the progress handler stopped it.
    samples = scrape(client, **{TIMEOUT_HEADER: "0.5"})
    assert _up(samples) == 0
    # The progress handler is gone: a long query after the scrape runs to its end.
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
            "SELECT count(*) FROM c"
        )
        assert cursor.fetchone()[0] == 200000


LOCKED_SCRAPE = """
import json, sqlite3, sys
import django
django.setup()
from django.core.management import call_command
from django.test import Client
from tamma_metrics.models import Issue
call_command("migrate", verbosity=0)
Issue.objects.create(platform="github", repository="a/b", external_id="1", issue_type="bug",
                     provider="openai", priority="high")
import logging
from tamma_metrics import labels
warnings = []
handler = logging.Handler()
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("tamma_metrics").addHandler(handler)
client = Client(HTTP_HOST="127.0.0.1")
client.get("/metrics")  # the labels of a /metrics request are admitted while unlocked
labels.invalidate()  # the middleware's recording checks the label policy under the lock
holder = sqlite3.connect(sys.argv[1], isolation_level=None)
holder.execute("BEGIN EXCLUSIVE")  # what a writer holds while it commits
locked = client.get("/metrics", HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS="3")
holder.execute("ROLLBACK")
after = client.get("/metrics")
print(json.dumps({"status": locked.status_code, "warnings": warnings,
                  "locked": locked.content.decode(), "after": after.content.decode()}))
"""


@only_sqlite
@pytest.mark.slow
def test_sqlite_lock_makes_the_scrape_answer_within_the_budget(tmp_path):
    result = json.loads(run_on_sqlite_file(LOCKED_SCRAPE, tmp_path, METRICS_AUTH_ENABLED="false"))
    assert result["status"] == 200
    locked = parse(result["locked"])
    assert _up(locked) == 0
    assert not locked.series("tamma_queue_depth")
    assert locked.series("tamma_build_info")
    # The gauges found the database locked (after a wait bounded by the budget), so the
    # middleware's recording did not ask it again (no second wait).
    assert result["warnings"] == [
        "tamma_metrics: database gauges left out: database is locked",
    ]
    after = parse(result["after"])
    assert _up(after) == 1
    assert after.value("tamma_queue_depth", queue_type="issues", priority="high") == 1


DOWN_SCRAPE = """
import django
django.setup()
from django.test import Client
from tamma_metrics import record
record.code_change(change_type="create", language="go", actor="system", file_type="go")
response = Client(HTTP_HOST="127.0.0.1").get("/metrics")
print(response.status_code)
print(response.content.decode())
"""


@pytest.mark.slow
def test_a_database_that_is_down_still_gets_the_in_process_metrics_served(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "multiproc"
    folder.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://nobody@127.0.0.1:{port}/down",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "METRICS_AUTH_ENABLED": "false",
    }
    done = run_python("-c", DOWN_SCRAPE, env=env)
    status, _, text = done.stdout.partition("\n")
    assert status == "200"
    samples = parse(text)
    assert _up(samples) == 0
    assert not samples.series("tamma_queue_depth")
    assert samples.total("tamma_code_changes_total") == 1


# --- the shared cache ---------------------------------------------------------------


def _gauge_queries(run: CaptureQueriesContext) -> int:
    return len([q for q in run.captured_queries if "GROUP BY" in q["sql"]])


def _scrape_counting(client, **headers):
    with CaptureQueriesContext(connection) as run:
        samples = scrape(client, **headers)
    return samples, _gauge_queries(run)


@pytest.mark.django_db
def test_a_second_scrape_within_the_cache_window_runs_no_gauge_query(client, settings):
    settings.TAMMA_METRICS = {"DATABASE_CACHE_SECONDS": 30, "POLICY_REFRESH_SECONDS": 3600}
    factories.issue(priority="high")
    first, ran = _scrape_counting(client)
    assert ran == len(queries.GAUGES)
    factories.issue(priority="high")
    second, ran = _scrape_counting(client)
    assert ran == 0
    # The cached figure, not the database's new one, until the entry expires.
    assert first.value("tamma_queue_depth", queue_type="issues", priority="high") == 1
    assert second.value("tamma_queue_depth", queue_type="issues", priority="high") == 1
    assert _up(second) == 1
    cache.delete(collectors.CACHE_KEY.format("queue_depth"))
    third, ran = _scrape_counting(client)
    assert ran == 1
    assert third.value("tamma_queue_depth", queue_type="issues", priority="high") == 2


@pytest.fixture
def clock(monkeypatch):
    """The collectors' wall clock, moved by the test (ages, not how long scrapes take)."""
    now = [1_000_000.0]
    monkeypatch.setattr(
        collectors,
        "time",
        types.SimpleNamespace(time=lambda: now[0], perf_counter=time.perf_counter),
    )
    return now


@pytest.mark.django_db
def test_cache_entries_expire_after_the_setting(client, settings, clock):
    settings.TAMMA_METRICS = {"DATABASE_CACHE_SECONDS": 1, "POLICY_REFRESH_SECONDS": 3600}
    assert _scrape_counting(client)[1] == len(queries.GAUGES)
    assert _scrape_counting(client)[1] == 0
    clock[0] += 1.1
    cache.clear()  # what the cache's own 1 s expiry does (its clock is not ours)
    assert _scrape_counting(client)[1] == len(queries.GAUGES)


@pytest.mark.django_db
def test_a_cached_value_is_never_older_than_the_scrapers_timeout(client, settings, clock):
    # Prometheus keeps its timeout below its interval: at a 1 s interval a 30 s cache
    # would hide a change for 30 scrapes, so an entry older than the timeout is refreshed.
    settings.TAMMA_METRICS = {"DATABASE_CACHE_SECONDS": 30, "POLICY_REFRESH_SECONDS": 3600}
    short = {"HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS": "0.5"}
    assert _scrape_counting(client, **short)[1] == len(queries.GAUGES)
    clock[0] += 0.4
    assert _scrape_counting(client, **short)[1] == 0  # 0.4 s old: shared
    clock[0] += 0.2
    assert _scrape_counting(client, **short)[1] == len(queries.GAUGES)  # 0.6 s: refreshed
    assert _scrape_counting(client)[1] == 0  # no header: the 30 s setting applies


@pytest.mark.django_db
def test_cache_seconds_zero_queries_every_scrape(client, settings):
    settings.TAMMA_METRICS = {"DATABASE_CACHE_SECONDS": 0}
    assert _scrape_counting(client)[1] == len(queries.GAUGES)
    assert _scrape_counting(client)[1] == len(queries.GAUGES)
    assert cache.get(collectors.CACHE_KEY.format("queue_depth")) is None


@pytest.mark.django_db
def test_the_cache_respects_who_may_see_which_family(client, settings, django_user_model):
    settings.TAMMA_METRICS = {"DATABASE_CACHE_SECONDS": 30, "POLICY_REFRESH_SECONDS": 3600}
    factories.approval(factories.issue(priority="low"), approval_type="merge", priority="high")
    viewer = django_user_model.objects.create_user("viewer")
    assign_perm("view_metricfamily", viewer, MetricFamily.objects.get(name="queue_depth"))
    token = ApiToken.create_for(viewer, "t")[1]
    as_viewer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    samples, ran = _scrape_counting(Client(), **as_viewer)
    assert ran == 1  # only the family the viewer may see was computed ...
    assert samples.names() == {"tamma_queue_depth"}
    assert samples.value("tamma_queue_depth", queue_type="issues", priority="low") == 1
    cached = {name for name in queries.GAUGES if cache.get(collectors.CACHE_KEY.format(name))}
    assert cached == {"queue_depth"}  # ... and cached

    samples, ran = _scrape_counting(client)  # the superuser sees everything
    assert ran == len(queries.GAUGES) - 1  # queue_depth came from the cache
    assert samples.value("tamma_pending_approvals", approval_type="merge", priority="high") == 1

    # Everything is cached now; the viewer still gets only their family, from the cache.
    samples, ran = _scrape_counting(Client(), **as_viewer)
    assert ran == 0
    assert samples.names() == {"tamma_queue_depth"}


@pytest.mark.django_db
def test_a_failed_scrape_caches_nothing_it_did_not_compute(client, settings, monkeypatch):
    settings.TAMMA_METRICS = {"DATABASE_CACHE_SECONDS": 30, "POLICY_REFRESH_SECONDS": 3600}

    def down() -> dict:
        raise RuntimeError("database is down")

    real = queries.GAUGES["queue_depth"]
    monkeypatch.setitem(queries.GAUGES, "queue_depth", down)
    assert _up(scrape(client)) == 0
    # Families computed before the failure are shared; the failed one is not.
    assert cache.get(collectors.CACHE_KEY.format("active_autonomous_loops")) is not None
    assert cache.get(collectors.CACHE_KEY.format("queue_depth")) is None
    monkeypatch.setitem(queries.GAUGES, "queue_depth", real)
    samples, ran = _scrape_counting(client)
    assert _up(samples) == 1
    # queue_depth and the two families after it; the two before came from the cache.
    assert ran == 3


@pytest.mark.django_db
def test_a_broken_cache_falls_back_to_the_database(client, settings, monkeypatch):
    settings.TAMMA_METRICS = {"DATABASE_CACHE_SECONDS": 30}

    def broken(*args, **kwargs):
        raise ConnectionError("cache is down")

    monkeypatch.setattr(collectors.cache, "get_many", broken)
    monkeypatch.setattr(collectors.cache, "set_many", broken)
    samples, ran = _scrape_counting(client)
    assert _up(samples) == 1
    assert ran == len(queries.GAUGES)
    assert len(samples.series("tamma_queue_depth")) == 4
