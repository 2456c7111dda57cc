"""The series a host project gets from the demo's wiring: django-prometheus's request
counters, database and cache series for the engines really used, and one request-latency
histogram (tamma_api_response_duration_seconds), not three."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection

from project.middleware import TIMED_ELSEWHERE
from tamma_metrics.conf import cache_weakness
from tests.utils import delta, scrape

pytestmark = pytest.mark.django_db


def test_database_and_cache_engines_are_instrumented(client):
    first = scrape(client)
    second = scrape(client)
    per_scrape = delta(second, first)  # what a scrape itself reads (its throttle's history)
    cache.set("tamma-test", 1)
    assert cache.get("tamma-test") == 1
    assert cache.get("tamma-test-missing") is None
    third = scrape(client)
    change = delta(third, second)
    backend = "locmem" if cache_weakness() == "private" else "native_redis"
    for name, ours in (("get", 2), ("get_hits", 1), ("get_misses", 1)):
        sample = f"django_cache_{name}_total"
        assert change.value(sample, backend=backend) - per_scrape.value(
            sample, backend=backend
        ) == (ours)
    vendor = {"sqlite": "sqlite", "postgresql": "postgresql"}[connection.vendor]
    db = {"alias": "default", "vendor": vendor}
    assert third.value("django_db_new_connections_total", **db) >= 1
    assert change.value("django_db_execute_total", **db) >= 1  # the scrape's own queries


def test_request_latency_is_one_histogram(client):
    client.get("/api/v1/families")
    samples = scrape(client)
    assert not {name for name in samples.names() if name.startswith(tuple(TIMED_ELSEWHERE))}
    assert (
        samples.value(
            "tamma_api_response_duration_seconds_count",
            endpoint="tamma_metrics:api-families",
            method="get",
            status_code="200",
            user_type="staff",
        )
        == 1
    )
    # django-prometheus's counters stay.
    assert samples.value("django_http_requests_total_by_method_total", method="GET") >= 1
