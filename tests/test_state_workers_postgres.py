"""The gunicorn race of tests/e2e/test_state_gunicorn.py on PostgreSQL: six senders post
the same issues at the same moment through three workers, each worker with its own
connection to a fresh database of the run's PostgreSQL server; each change is written and
counted once. (The e2e suite runs on SQLite only; this runs in the PostgreSQL run.)"""

from __future__ import annotations

import pytest
from django.db import connection

from tests.e2e.servers import Gunicorn, Site
from tests.e2e.test_state_gunicorn import SENDERS, issue, together
from tests.utils import parse

pytestmark = pytest.mark.slow


def test_the_same_changes_through_three_workers_count_once_on_postgres(
    tmp_path, process_database_url
):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL run only: tests/e2e/test_state_gunicorn.py runs it on SQLite")
    site = Site.create(tmp_path / "site", DATABASE_URL=process_database_url)
    token = site.token("tamma", "orchestrator")
    scraper = site.token("prom", "prometheus")
    ids = [str(n) for n in range(60)]
    with Gunicorn(site, workers=3, access_log=True) as server:
        created = together(server, token, "issues", [issue(i, "in_progress", 5) for i in ids])
        assert created == {"created": 60, "unchanged": 60 * (SENDERS - 1)}
        ends = [issue(i, "succeeded" if int(i) % 3 else "failed", 65) for i in ids]
        ended = together(server, token, "issues", ends)
        assert ended == {"updated": 60, "unchanged": 60 * (SENDERS - 1)}
        workers = server.answered_by("/api/v1/issues")
        assert len([pid for pid, n in workers.items() if n]) >= 2
        samples = parse(server.get("/metrics", scraper).text)
    rows = site.shell(
        "from tamma_metrics.models import Issue\n"
        "print(Issue.objects.filter(status='succeeded').count(),"
        " Issue.objects.filter(status='failed').count())"
    ).split()
    assert rows == ["40", "20"]
    processed = "tamma_issues_processed_total"
    assert samples.total(processed, outcome="success") == 40
    assert samples.total(processed, outcome="failure") == 20
    assert samples.total("tamma_issue_completion_duration_seconds_count") == 60
