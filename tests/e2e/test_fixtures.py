"""The shared e2e fixtures as another module uses them: defaults, no overrides."""

from __future__ import annotations

RECORD = """
from tamma_metrics import record
for _ in range(5):
    record.code_change(change_type="create", language="rust", actor="system", file_type="rs")
"""


def test_default_fixtures_serve_three_workers_scraped_by_prometheus(
    e2e_site, gunicorn_server, prometheus_server, prom_query
):
    assert len(gunicorn_server.worker_pids()) == 3
    assert prom_query('up{job="tamma"}') == 1
    e2e_site.shell(RECORD)  # another process, the same multiprocess folder
    changes = 'sum(tamma_code_changes_total{job="tamma",language="rust"})'
    assert prometheus_server.wait_for(changes, 5) == 5
