"""Every process counts: other processes share the multiprocess folder; single-process works."""

from __future__ import annotations

import os
import sqlite3

import pytest

from tests.utils import delta, parse, run_python

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _run(args: list[str], **env: str) -> str:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env}
    return run_python(*args, env=environment).stdout


def test_a_management_command_in_another_process_appears_in_the_scrape(metrics, tmp_path):
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"]  # the suite runs in multiprocess mode
    database = tmp_path / "other.sqlite3"
    url = f"sqlite:///{database}"
    before = metrics()
    _run(["manage.py", "migrate", "-v0"], DATABASE_URL=url)
    _run(["manage.py", "seed_demo", "--issues", "150"], DATABASE_URL=url)
    change = delta(metrics(), before)

    # The other process's database is the truth for what it recorded.
    with sqlite3.connect(database) as db:
        processed = db.execute(
            "SELECT COUNT(*) FROM tamma_metrics_issue "
            "WHERE status IN ('succeeded', 'failed', 'timed_out')"
        ).fetchone()[0]
        failed = db.execute(
            "SELECT COUNT(*) FROM tamma_metrics_issue WHERE status = 'failed'"
        ).fetchone()[0]
        prs = db.execute("SELECT COUNT(*) FROM tamma_metrics_pullrequest").fetchone()[0]
    assert processed > 0
    assert change.total("tamma_issues_processed_total") == processed
    assert change.total("tamma_issues_processed_total", outcome="failure") == failed
    assert change.total("tamma_prs_created_total") == prs


def test_a_shell_in_another_process_records_through_the_api(metrics, tmp_path):
    url = f"sqlite:///{tmp_path / 'shell.sqlite3'}"
    _run(["manage.py", "migrate", "-v0"], DATABASE_URL=url)
    before = metrics()
    _run(
        [
            "-c",
            "import django; django.setup(); from tamma_metrics import record; "
            "[record.code_change(change_type='delete', language='python', actor='user', "
            "file_type='py') for _ in range(3)]",
        ],
        DATABASE_URL=url,
    )
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_code_changes_total",
            change_type="delete",
            language="python",
            actor="user",
            file_type="py",
        )
        == 3
    )


SINGLE_PROCESS_SCRAPE = """
import django
django.setup()
from django.core.management import call_command
from django.test import Client
from tamma_metrics import record
call_command("migrate", verbosity=0)
record.escalation(escalation_type="safety", severity="critical", component="reviewer",
                  reason="secret_detected")
print(Client().get("/metrics").content.decode())
"""


def test_single_process_mode_serves_the_default_registry():
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        TAMMA_TEST_SINGLE_PROCESS="1",
        METRICS_AUTH_ENABLED="false",
    )
    samples = parse(run_python("-c", SINGLE_PROCESS_SCRAPE, env=env).stdout)
    assert (
        samples.value(
            "tamma_escalations_total",
            escalation_type="safety",
            severity="critical",
            component="reviewer",
            reason="secret_detected",
        )
        == 1
    )
    assert samples.value("tamma_metrics_collector_up", collector="database") == 1
    assert samples.total("tamma_queue_depth") == 0
    assert "process_cpu_seconds_total" in samples.names()
    assert not any(name.endswith("_created") for name in samples.names())
