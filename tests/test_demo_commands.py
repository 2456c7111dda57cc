"""The demo site's commands that `make run` calls."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tamma_metrics.models import ApiToken

pytestmark = pytest.mark.django_db


def test_demo_scrape_token_prints_a_working_token_and_config(tmp_path):
    settings_file = tmp_path / "prometheus.token"
    out = io.StringIO()
    call_command("demo_scrape_token", file=str(settings_file), stdout=out)
    token = settings_file.read_text().strip()
    assert token in out.getvalue()
    assert f"credentials_file: {settings_file}" in out.getvalue()
    assert "scrape_interval: 15s" in out.getvalue()
    assert oct(settings_file.stat().st_mode & 0o777) == "0o600"
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    # Rotating revokes the previous token.
    call_command("demo_scrape_token", file=str(settings_file), stdout=io.StringIO())
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 1


def test_demo_orchestrator_token_writes_state(tmp_path):
    path = tmp_path / "orchestrator.token"
    out = io.StringIO()
    call_command("demo_orchestrator_token", file=str(path), stdout=out)
    token = path.read_text().strip()
    assert token in out.getvalue()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # The printed example, as Tamma would send it.
    body = out.getvalue().split("-d '")[1].split("'")[0]
    tamma = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = tamma.post("/api/v1/issues", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert tamma.get("/metrics").status_code == 403  # it writes state and reads nothing
    call_command("demo_orchestrator_token", file=str(path), stdout=io.StringIO())
    assert Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/v1/families").status_code == 401


def test_demo_admin_prints_a_working_login():
    out = io.StringIO()
    call_command("demo_admin", stdout=out)
    username, password = out.getvalue().split("Admin login: ")[1].strip().split(" / ")
    client = Client()
    assert client.login(username=username, password=password)
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_demo_heartbeats_keep_the_live_demo_loops_active(tmp_path, live_server):
    """Through the state API, with the orchestrator token, as Tamma does: the loops seeded
    alive get a fresh heartbeat; the stale and stopped ones are left as they are."""
    from datetime import timedelta

    from django.utils import timezone

    from project.management.commands.seed_demo import LOOPS
    from tamma_metrics.models import AutonomousLoop
    from tamma_metrics.scrape import queries

    long_ago = timezone.now() - timedelta(days=1)
    for name, mode, environment, status, _ in LOOPS:
        AutonomousLoop.objects.create(
            name=name, mode=mode, environment=environment, status=status, last_heartbeat=long_ago
        )
    assert sum(queries.active_loops().values()) == 0
    path = tmp_path / "orchestrator.token"
    call_command("demo_orchestrator_token", file=str(path), stdout=io.StringIO())
    target = live_server.url.removeprefix("http://")
    call_command("demo_heartbeats", target=target, token_file=str(path), once=True)

    fresh = set(
        AutonomousLoop.objects.filter(last_heartbeat__gt=long_ago).values_list("name", flat=True)
    )
    assert fresh == {"orchestrator-prod", "worker-prod-1", "worker-prod-2",
                     "orchestrator-staging", "cli-dev"}  # fmt: skip
    assert {key: n for key, n in queries.active_loops().items() if n} == {
        ("orchestrator", "production"): 1,
        ("worker", "production"): 2,
        ("orchestrator", "staging"): 1,
        ("cli", "development"): 1,
    }
    # A rotated token is refused: the command stops with the reason instead of retrying.
    call_command("demo_orchestrator_token", file=str(tmp_path / "other"), stdout=io.StringIO())
    with pytest.raises(CommandError, match="HTTP 401"):
        call_command("demo_heartbeats", target=target, token_file=str(path), once=True)
