"""METRICS_PORT: on that port only /metrics and /metrics/health answer, with the same auth."""

from __future__ import annotations

import pytest

from tamma_metrics import checks
from tamma_metrics.conf import app_settings, parse_port

pytestmark = pytest.mark.django_db

PORT = "9464"


@pytest.fixture
def metrics_port(settings):
    settings.TAMMA_METRICS = {"METRICS_PORT": int(PORT)}


def test_off_by_default_every_port_serves_every_url(client):
    assert client.get("/admin/", SERVER_PORT=PORT).status_code == 200
    assert client.get("/metrics", SERVER_PORT=PORT).status_code == 200


@pytest.mark.usefixtures("metrics_port")
@pytest.mark.parametrize("path", ["/", "/admin/", "/admin/login/", "/metrics/", "/nope"])
def test_other_urls_are_404_on_the_metrics_port(client, path):
    response = client.get(path, SERVER_PORT=PORT)
    assert response.status_code == 404
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == b"Not found: this port serves /metrics only.\n"


@pytest.mark.usefixtures("metrics_port")
def test_metrics_and_health_answer_on_the_metrics_port_with_the_same_auth(client, anonymous):
    assert client.get("/metrics", SERVER_PORT=PORT).status_code == 200
    assert client.get("/metrics/health", SERVER_PORT=PORT).json()["version"] == "0.1.0"
    assert anonymous.get("/metrics", SERVER_PORT=PORT).status_code == 401
    assert "version" not in anonymous.get("/metrics/health", SERVER_PORT=PORT).json()
    # The main port is unchanged.
    assert client.get("/admin/", SERVER_PORT="80").status_code == 200


@pytest.mark.usefixtures("metrics_port")
def test_the_port_comes_from_the_socket_not_from_headers(client):
    response = client.get(
        "/admin/", SERVER_PORT=PORT, HTTP_HOST="127.0.0.1:80", HTTP_X_FORWARDED_PORT="80"
    )
    assert response.status_code == 404


def test_metrics_port_from_the_environment_and_its_check(settings, monkeypatch):
    monkeypatch.setenv("METRICS_PORT", PORT)
    app_settings.reload()
    assert parse_port(app_settings.METRICS_PORT) == 9464
    assert checks.check_settings() == []
    monkeypatch.setenv("METRICS_PORT", "90000")
    app_settings.reload()
    assert {e.id for e in checks.check_settings()} == {"tamma_metrics.E012"}
    monkeypatch.setenv("METRICS_PORT", "")
    app_settings.reload()
    assert parse_port(app_settings.METRICS_PORT) is None
    monkeypatch.delenv("METRICS_PORT")
    app_settings.reload()
    settings.TAMMA_METRICS = {"METRICS_PORT": "metrics"}
    assert {e.id for e in checks.check_settings()} == {"tamma_metrics.E012"}
