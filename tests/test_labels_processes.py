"""Caps hold for the deployment: two processes recording at once share one budget."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.utils import ROOT, parse, process_env, run_python

pytestmark = pytest.mark.slow

SETUP = """
import django
django.setup()
from tamma_metrics.models import LabelPolicy, MetricFamily
MetricFamily.objects.filter(name="ai_requests_total").update(max_series=5)
LabelPolicy.objects.filter(label="model", family="").update(max_values=1000)
"""

RECORD = """
import sys
import django
django.setup()
from tamma_metrics import record
for i in range(20):
    record.ai_request(provider="openai", model=f"{sys.argv[1]}-{i}", request_type="chat",
                      outcome="success", duration_seconds=1)
"""

SCRAPE = """
import django
django.setup()
from django.test import Client
from tamma_metrics.models import Admission
print(Admission.objects.filter(scope="series:ai_requests_total").count())
print(Client(HTTP_HOST="127.0.0.1").get("/metrics", {"name[]": "tamma_ai_requests_total"})
      .content.decode())
"""


def test_two_processes_share_one_series_cap(tmp_path, process_database_url):
    # On the PostgreSQL run the processes race on PostgreSQL, where the advisory lock
    # per scope is what keeps two of them from both taking the last place.
    env = process_env(tmp_path, process_database_url)

    def run(*args: str) -> str:
        return run_python(*args, env=env).stdout

    run("manage.py", "migrate", "-v0")
    run("-c", SETUP)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", RECORD, name],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()
    admitted, _, text = run("-c", SCRAPE).partition("\n")
    samples = parse(text)
    series = samples.series("tamma_ai_requests_total")
    overflow = frozenset(
        {
            "provider": "overflow",
            "model": "overflow",
            "request_type": "overflow",
            "outcome": "overflow",
        }.items()
    )
    assert int(admitted) == 5
    assert len(series) == 5 + 1
    assert series[overflow] == 40 - 5
    assert sum(series.values()) == 40
