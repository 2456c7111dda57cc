"""Fixtures for end-to-end tests against real gunicorn and Prometheus processes.

Module-scoped: one site, one gunicorn (3 workers) and one Prometheus (1 s scrapes) per
test module. A module can override ``gunicorn_server`` or ``prometheus_server`` to
start them differently (see ``test_serving.py``), or use ``servers.Gunicorn`` and
``servers.Prometheus`` directly.

    def test_something(e2e_site, gunicorn_server, prom_query, prometheus_server):
        e2e_site.manage("seed_demo", "--issues", "100")        # events from a command
        gunicorn_server.get("/metrics/health")                  # events from a worker
        truth = e2e_site.sql("SELECT COUNT(*) FROM tamma_metrics_issue")
        prometheus_server.wait_for('sum(tamma_issues_processed_total{job="tamma"})', truth)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import PROMETHEUS, Gunicorn, Prometheus, ScrapeJob, Site

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def e2e_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A migrated SQLite file database with the preset roles, and its multiprocess folder."""
    return Site.create(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def scrape_token(e2e_site: Site) -> str:
    """A bearer token of the `prometheus` role, as Prometheus uses it."""
    return e2e_site.token("prom", "prometheus")


@pytest.fixture(scope="module")
def gunicorn_server(e2e_site: Site) -> Iterator[Gunicorn]:
    """gunicorn with 3 workers on a free port of 127.0.0.1, stopped by PID afterwards."""
    with Gunicorn(e2e_site, workers=3) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus_server(
    tmp_path_factory: pytest.TempPathFactory, gunicorn_server: Gunicorn, scrape_token: str
) -> Iterator[Prometheus]:
    """Prometheus scraping ``gunicorn_server`` every second as job ``tamma``; up when
    yielded."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} is missing: run `make bootstrap` (scripts/bootstrap.sh)")
    jobs = [ScrapeJob("tamma", gunicorn_server.address, scrape_token)]
    with Prometheus(tmp_path_factory.mktemp("prometheus"), jobs) as prometheus:
        prometheus.wait_for('sum(up{job="tamma"})', 1)
        yield prometheus


@pytest.fixture(scope="module")
def prom_query(prometheus_server: Prometheus) -> Callable[[str], float | None]:
    """Instant query returning the single value (None when empty)."""
    return prometheus_server.value
