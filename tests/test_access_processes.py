"""A permission change made by one process reaches a long-running other process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.utils import ROOT, run_python

pytestmark = pytest.mark.slow

SCRAPER = """
import sys
import django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION="Bearer " + sys.argv[1])
for _ in sys.stdin:
    text = client.get("/metrics").content.decode()
    print(" ".join(sorted({l.split()[2] for l in text.splitlines() if l.startswith("# HELP")})),
          flush=True)
"""

SETUP = """
import django
django.setup()
from django.contrib.auth.models import User
from guardian.shortcuts import assign_perm
from tamma_metrics.models import ApiToken, MetricFamily
user = User.objects.create_user("viewer")
assign_perm("view_metricfamily", user, MetricFamily.objects.get(name="queue_depth"))
print(ApiToken.create_for(user, "t")[1])
"""

GRANT = """
import django
django.setup()
from django.contrib.auth.models import User
from guardian.shortcuts import assign_perm
from tamma_metrics.models import MetricFamily
assign_perm("view_metricfamily", User.objects.get(username="viewer"),
            MetricFamily.objects.get(name="pending_approvals"))
"""


def test_a_grant_in_one_process_shows_in_another_on_the_next_scrape(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "CACHE_URL": f"file://{tmp_path}/cache",
        "SECRET_KEY": "s" * 50,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def run(*args: str) -> str:
        return run_python(*args, env=env).stdout.strip()

    run("manage.py", "migrate", "-v0")
    token = run("-c", SETUP)
    scraper = subprocess.Popen(
        [sys.executable, "-c", SCRAPER, token],
        cwd=ROOT,
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        scraper.stdin.write("scrape\n")
        scraper.stdin.flush()
        assert scraper.stdout.readline().split() == ["tamma_queue_depth"]
        run("-c", GRANT)  # another process changes the permissions
        scraper.stdin.write("scrape\n")
        scraper.stdin.flush()
        assert scraper.stdout.readline().split() == ["tamma_pending_approvals", "tamma_queue_depth"]
    finally:
        scraper.stdin.close()
        scraper.wait(timeout=30)
