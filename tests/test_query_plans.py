"""The gauge queries read their partial indexes, not the whole table, on both databases.

100,000 issues (1% queued) and 20,000 approvals (1% of them pending), statistics
gathered, then the plans of the querysets exactly as ``tamma_metrics.scrape.queries`` builds
them: no full scan of either table. Each run of the suite checks the database it runs on.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.utils import timezone

from tamma_metrics.models import Approval, Issue
from tamma_metrics.scrape import queries

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

POSTGRES = connection.vendor == "postgresql"
ISSUES = 100_000

# One INSERT ... SELECT each, written once for both databases (recursive CTE rather
# than generate_series, which SQLite lacks): far faster than building 100,000 models.
INSERT_ISSUES = """
INSERT INTO tamma_metrics_issue (platform, repository, external_id, title, issue_type,
                                 complexity, priority, provider, status, created_at)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < %s)
SELECT 'github', 'acme/big', CAST(i AS TEXT), '', 'bug', 'medium',
       CASE i %% 4 WHEN 0 THEN 'low' WHEN 1 THEN 'medium' WHEN 2 THEN 'high' ELSE 'critical' END,
       'openai',
       CASE WHEN i %% 100 = 0 THEN 'queued' WHEN i %% 100 < 5 THEN 'failed' ELSE 'succeeded' END,
       %s
FROM n
"""
INSERT_APPROVALS = """
INSERT INTO tamma_metrics_approval (issue_id, approval_type, priority, status, requested_at)
SELECT id,
       CASE id %% 4 WHEN 0 THEN 'plan' WHEN 1 THEN 'code_review' WHEN 2 THEN 'merge'
                   ELSE 'deployment' END,
       CASE id %% 3 WHEN 0 THEN 'low' WHEN 1 THEN 'high' ELSE 'critical' END,
       CASE WHEN id %% 500 = 0 THEN 'pending' ELSE 'approved' END,
       %s
FROM tamma_metrics_issue WHERE id %% 5 = 0
"""


@pytest.fixture
def big_tables() -> None:
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(INSERT_ISSUES, [ISSUES - 1, now])
        cursor.execute(INSERT_APPROVALS, [now])
        cursor.execute("ANALYZE tamma_metrics_issue" if POSTGRES else "ANALYZE")
        if POSTGRES:
            cursor.execute("ANALYZE tamma_metrics_approval")
    # The data is what the plans are about: check it, and the gauges over it.
    assert Issue.objects.count() == ISSUES
    assert Issue.objects.filter(status="queued").count() == ISSUES // 100
    pending = Approval.objects.filter(status="pending").count()
    assert pending == Approval.objects.count() // 100
    assert sum(queries.queue_depth().values()) == ISSUES // 100
    assert sum(queries.pending_approvals().values()) == pending


PLANS = {
    "queue_depth": (queries.queue_depth_rows, "tamma_metrics_issue", "tamma_issue_queued_prio"),
    "pending_approvals": (
        queries.pending_approvals_rows,
        "tamma_metrics_approval",
        "tamma_approval_pending",
    ),
    "oldest_pending": (
        queries.oldest_pending_approval_rows,
        "tamma_metrics_approval",
        "tamma_approval_pending",
    ),
}


# The indexes of each table that fit its gauge queries.
INDEXES = {
    "tamma_metrics_issue": {"tamma_issue_queued_prio", "tamma_issue_status_done"},
    "tamma_metrics_approval": {"tamma_approval_pending"},
}


@pytest.mark.skipif(not POSTGRES, reason="PostgreSQL run only")
@pytest.mark.parametrize("gauge", list(PLANS))
def test_postgres_plans_use_an_index(big_tables, gauge):
    build, table, _ = PLANS[gauge]
    plan = build().explain()
    assert f"Seq Scan on {table}" not in plan, plan
    # ANALYZE samples rows at random, so between two fitting indexes (for issues also
    # tamma_issue_status_done) the cheaper-looking one may change from run to run.
    used = re.findall(r"(?:Index|Index Only|Bitmap Index) Scan (?:using|on) (\w+)", plan)
    assert used, plan
    assert set(used) <= INDEXES[table], plan


@pytest.mark.skipif(POSTGRES, reason="SQLite run only")
@pytest.mark.parametrize("gauge", list(PLANS))
def test_sqlite_plans_use_the_partial_indexes(big_tables, gauge):
    build, table, index = PLANS[gauge]
    plan = build().explain()  # EXPLAIN QUERY PLAN
    reads = [line for line in plan.splitlines() if re.search(rf"\b(SCAN|SEARCH) {table}\b", line)]
    assert reads, plan
    for line in reads:
        assert re.search(rf"USING (COVERING )?INDEX {index}\b", line), plan
