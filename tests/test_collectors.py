"""Database gauges at scrape time: exact values, every known combination, constant queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import CollectorRegistry

from tamma_metrics.models import Approval, AutonomousLoop, Issue, Priority
from tamma_metrics.scrape import queries
from tamma_metrics.scrape.collectors import DatabaseCollector
from tests import factories

pytestmark = pytest.mark.django_db


def test_pending_approvals_follow_creation_and_decision(metrics):
    issue = factories.issue()
    for priority in ("high", "high", "low"):
        factories.approval(issue, approval_type="merge", priority=priority)
    deployment = factories.approval(issue, approval_type="deployment", priority="critical")
    samples = metrics()
    assert samples.value("tamma_pending_approvals", approval_type="merge", priority="high") == 2
    assert samples.value("tamma_pending_approvals", approval_type="merge", priority="low") == 1
    assert (
        samples.value("tamma_pending_approvals", approval_type="deployment", priority="critical")
        == 1
    )
    # Every known combination is present, zeros included, so series never vanish.
    expected = len(Approval.ApprovalType.values) * len(Priority.values)
    assert len(samples.series("tamma_pending_approvals")) == expected
    assert samples.total("tamma_pending_approvals") == 4

    deployment.status = Approval.Status.APPROVED
    deployment.save()
    samples = metrics()
    assert (
        samples.value("tamma_pending_approvals", approval_type="deployment", priority="critical")
        == 0
    )
    assert samples.total("tamma_pending_approvals") == 3


def test_oldest_pending_approval_is_a_timestamp_present_only_while_one_is_pending(metrics):
    issue = factories.issue()
    oldest = timezone.now().replace(microsecond=0) - timedelta(hours=5)
    first = factories.approval(issue, approval_type="plan", requested_at=oldest)
    second = factories.approval(
        issue, approval_type="plan", requested_at=oldest + timedelta(hours=1)
    )
    factories.approval(
        issue, approval_type="plan", requested_at=oldest - timedelta(hours=1), status="approved"
    )
    name = "tamma_approval_oldest_pending_timestamp_seconds"
    samples = metrics()
    # A type with nothing pending has no series: no 0 for ``time() - x`` to read as 1970.
    assert samples.series(name) == {frozenset({("approval_type", "plan")}): oldest.timestamp()}

    first.status = Approval.Status.APPROVED
    first.save()
    later = (oldest + timedelta(hours=1)).timestamp()
    assert metrics().series(name) == {frozenset({("approval_type", "plan")}): later}
    second.status = Approval.Status.REJECTED
    second.save()
    assert metrics().series(name) == {}
    # The health report still lists every type, with no age when none is pending.
    assert queries.oldest_pending_approval() == dict.fromkeys(
        [(t,) for t in Approval.ApprovalType.values], 0.0
    )


def test_queue_depth_by_priority(metrics):
    for priority, n in (("critical", 3), ("low", 1)):
        for _ in range(n):
            factories.issue(priority=priority)
    factories.issue(priority="critical", status="in_progress")
    samples = metrics()
    assert samples.value("tamma_queue_depth", queue_type="issues", priority="critical") == 3
    assert samples.value("tamma_queue_depth", queue_type="issues", priority="low") == 1
    assert samples.value("tamma_queue_depth", queue_type="issues", priority="medium") == 0
    assert samples.total("tamma_queue_depth") == Issue.objects.filter(status="queued").count()


def test_active_loops_need_a_recent_heartbeat(metrics, settings):
    settings.TAMMA_METRICS = {"LOOP_HEARTBEAT_TTL_SECONDS": 60, "DATABASE_CACHE_SECONDS": 0}
    now = timezone.now()
    factories.loop(mode="worker", environment="production", last_heartbeat=now)
    factories.loop(
        mode="worker", environment="production", last_heartbeat=now - timedelta(seconds=30)
    )
    factories.loop(
        mode="worker", environment="production", last_heartbeat=now - timedelta(seconds=600)
    )  # stale
    factories.loop(mode="orchestrator", environment="staging", status="paused")
    samples = metrics()
    assert (
        samples.value("tamma_active_autonomous_loops", mode="worker", environment="production") == 2
    )
    assert (
        samples.value("tamma_active_autonomous_loops", mode="orchestrator", environment="staging")
        == 0
    )
    assert len(samples.series("tamma_active_autonomous_loops")) == (
        len(AutonomousLoop.Mode.values) * len(AutonomousLoop.Environment.values)
    )
    assert samples.value("tamma_metrics_collector_up", collector="database") == 1


def test_describe_runs_no_query():
    with CaptureQueriesContext(connection) as queries_run:
        registry = CollectorRegistry()
        registry.register(DatabaseCollector())
    assert len(queries_run) == 0


def _scrape_queries(client) -> list[str]:
    with CaptureQueriesContext(connection) as queries_run:
        assert client.get("/metrics").status_code == 200
    return [query["sql"] for query in queries_run]


def _limits(sql: list[str]) -> list[str]:
    return [s for s in sql if "busy_timeout =" in s or "set_config('statement_timeout'" in s]


@pytest.mark.slow
def test_queries_per_scrape_do_not_grow_with_the_data(client, settings):
    settings.TAMMA_METRICS = {"POLICY_REFRESH_SECONDS": 3600, "DATABASE_CACHE_SECONDS": 0}
    factories.issue()
    _scrape_queries(client)  # warm up: the labels of this request are admitted once
    small = _scrape_queries(client)
    # One GROUP BY per gauge family, each given the time left of the scrape's budget, and
    # one limit for the authentication's lookups, which share that budget.
    assert len([s for s in small if "GROUP BY" in s]) == len(queries.GAUGES)
    # PostgreSQL also puts back the statement timeout when each savepoint is released.
    restore = 2 if connection.vendor == "postgresql" else 0
    assert len(_limits(small)) == len(queries.GAUGES) + 1 + restore
    issues = [
        Issue(
            platform="gitlab",
            repository="acme/big",
            external_id=str(i),
            issue_type="bug",
            provider="openai",
            priority=Priority.values[i % 4],
            status="queued" if i % 3 else "succeeded",
        )
        for i in range(5000)
    ]
    Issue.objects.bulk_create(issues)
    issue = Issue.objects.first()
    for i in range(50):
        factories.approval(issue, priority=Priority.values[i % 4])
    assert len(_scrape_queries(client)) == len(small)


def test_database_failure_keeps_the_scrape_alive(metrics, monkeypatch):
    def down():
        raise RuntimeError("database is down")

    monkeypatch.setitem(queries.GAUGES, "queue_depth", down)
    samples = metrics()
    assert samples.value("tamma_metrics_collector_up", collector="database") == 0
    assert not samples.series("tamma_queue_depth")
    assert not samples.series("tamma_pending_approvals")
    assert samples.series("tamma_build_info")  # the rest of the scrape is served


def test_gauges_equal_the_shared_queries(metrics):
    issue = factories.issue()
    factories.approval(issue, approval_type="merge", priority="high")
    samples = metrics()
    for (approval_type, priority), value in queries.pending_approvals().items():
        assert (
            samples.value("tamma_pending_approvals", approval_type=approval_type, priority=priority)
            == value
        )
