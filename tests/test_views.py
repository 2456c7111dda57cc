"""GET /metrics formats, compression, filtering and methods; /metrics/health."""

from __future__ import annotations

import gzip

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tamma_metrics import catalogue, record
from tamma_metrics.scrape import encoder
from tests.utils import basic, parse, scrape

pytestmark = pytest.mark.django_db

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def test_default_is_prometheus_text_0_0_4_with_every_catalogue_family(client):
    record.escalation(escalation_type="blocked", severity="low", component="git", reason="x")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    text = response.content.decode()
    for family in catalogue.FAMILIES:
        assert f"# HELP {family.full_name} " in text or f"# HELP {family.metric_name} " in text, (
            family.name
        )
    samples = parse(text)
    assert samples.value("tamma_build_info", version="0.1.0", environment="development") == 1
    assert "process_resident_memory_bytes" in samples.names()
    assert not any(name.endswith("_created") for name in samples.names())


def test_openmetrics_by_accept_passes_the_strict_parser(client):
    record.ai_request(
        provider="anthropic",
        model="claude-sonnet",
        request_type="chat",
        outcome="success",
        duration_seconds=1.5,
        tokens={"input": 10},
    )
    response = client.get("/metrics", HTTP_ACCEPT=OPENMETRICS)
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = response.content.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["tamma_ai_requests"].type == "counter"
    assert families["tamma_ai_request_duration_seconds"].type == "histogram"


def test_gzip_by_accept_encoding(client):
    plain = client.get("/metrics", {"name[]": "tamma_queue_depth"})
    zipped = client.get(
        "/metrics", {"name[]": "tamma_queue_depth"}, HTTP_ACCEPT_ENCODING="gzip, deflate"
    )
    assert zipped["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain
    assert parse(gzip.decompress(zipped.content).decode()) == parse(plain.content.decode())


def test_name_filter_restricts_and_skips_unwanted_queries(client, settings):
    settings.TAMMA_METRICS = {"POLICY_REFRESH_SECONDS": 3600}
    record.code_change(change_type="create", language="python", actor="system", file_type="py")
    scrape(client, names=["tamma_code_changes_total"])  # warm up: labels of this request
    with CaptureQueriesContext(connection) as queries_run:
        samples = scrape(client, names=["tamma_code_changes_total"])
    assert samples.names() == {"tamma_code_changes_total"}
    # Only the session lookup ran (within the scrape's budget): the database collector
    # was never asked.
    assert not [q["sql"] for q in queries_run if "tamma_metrics_" in q["sql"]]
    selects = [q["sql"] for q in queries_run if " FROM " in q["sql"]]
    assert len(selects) == 2
    assert "django_session" in selects[0]
    assert "auth_user" in selects[1]

    samples = scrape(client, names=["tamma_queue_depth", "tamma_code_changes_total"])
    assert samples.names() == {"tamma_queue_depth", "tamma_code_changes_total"}


def test_head_is_allowed_and_post_is_405(client):
    assert client.head("/metrics").status_code == 200
    response = client.post("/metrics")
    assert response.status_code == 405
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/metrics", "/metrics/health"])
def test_other_methods_get_405_not_a_csrf_page(method, path, django_user_model):
    """With CSRF checks on, as in production, the answer is still 405 with Allow."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(django_user_model.objects.create_superuser("csrf", password="x"))
    for caller in (browser, Client(enforce_csrf_checks=True)):
        response = getattr(caller, method)(path)
        assert response.status_code == 405
        assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize(
    ("accept_encoding", "zipped"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, gzip;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, identity", False),
        ("*;q=0.5", True),
        ("*, gzip;q=0", False),
        ("identity", False),
        ("br", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_gzip_honours_q_values(client, accept_encoding, zipped):
    response = client.get(
        "/metrics", {"name[]": "tamma_queue_depth"}, HTTP_ACCEPT_ENCODING=accept_encoding
    )
    assert (response.get("Content-Encoding") == "gzip") is zipped
    body = gzip.decompress(response.content) if zipped else response.content
    assert b"tamma_queue_depth" in body


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        # A higher q wins, whatever the order.
        (
            "application/openmetrics-text;version=1.0.0;q=0.2,text/plain;version=0.0.4;q=0.9",
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (
            "text/plain;version=0.0.4;q=0.1,application/openmetrics-text;version=1.0.0;q=0.8",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
        ),
        # q=0 refuses.
        ("application/openmetrics-text;q=0", "text/plain; version=0.0.4; charset=utf-8"),
        # A version prometheus_client cannot compare (it raised TypeError: a 500) asks for
        # nothing: the default.
        ("text/plain;version=x", "text/plain; version=0.0.4; charset=utf-8"),
        ("application/openmetrics-text;version=1.x", "text/plain; version=0.0.4; charset=utf-8"),
        (
            "application/openmetrics-text;q=0,text/plain;version=1.0.0",
            "text/plain; version=1.0.0; charset=utf-8; escaping=underscores",
        ),  # fmt: skip
    ],
)
def test_accept_honours_q_values(client, accept, content_type):
    response = client.get("/metrics", {"name[]": "tamma_queue_depth"}, HTTP_ACCEPT=accept)
    assert response["Content-Type"] == content_type


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "*/*",
        "text/plain",
        "text/plain, application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "application/openmetrics-text;version=0.0.1",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        "application/json",
    ],
)
def test_without_q_differences_negotiation_is_prometheus_clients(accept):
    assert encoder.negotiate(accept)[1] == choose_encoder(accept)[1]


def test_disabled_metrics_answer_404_and_record_nothing(client, settings):
    before = scrape(client)
    settings.TAMMA_METRICS = {"ENABLED": False}
    record.escalation(escalation_type="blocked", severity="low", component="git", reason="x")
    assert client.get("/metrics").status_code == 404
    settings.TAMMA_METRICS = {}
    after = scrape(client)
    assert after.total("tamma_escalations_total") == before.total("tamma_escalations_total")


def test_health_for_anonymous_callers_has_no_details(anonymous):
    response = anonymous.get("/metrics/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        # What it is about, so "ok" is not read as the health of Tamma's work.
        "covers": "this service: it answers and its database is reachable (for load "
        "balancers); the health of Tamma's work (approvals, escalations, the queue, the "
        "loops) is /reports/health/ and /api/v1/health",
        "database": {"reachable": True},
    }
    assert response["Cache-Control"] == "no-store"


def test_health_details_for_signed_in_users(client, anonymous):
    client.get("/metrics")
    User.objects.create_user("pm", password="pw")
    body = anonymous.get("/metrics/health", HTTP_AUTHORIZATION=basic("pm", "pw")).json()
    assert body["status"] == "ok"
    assert body["multiprocess"] is True
    assert body["families"] == {"counter": 16, "histogram": 9, "gauge": 11}
    assert body["last_scrape"]["duration_seconds"] > 0


def test_health_reports_an_unreachable_database(client, monkeypatch):
    from tamma_metrics import views

    monkeypatch.setattr(views, "_database_reachable", lambda: False)
    response = client.get("/metrics/health")
    assert response.status_code == 503
    # Not one of the report's words (healthy, degraded, critical): another question.
    assert response.json()["status"] == "unavailable"


def test_metrics_series_counts_admitted_label_sets_per_event_family(client):
    for model in ("m1", "m2", "m1"):
        record.ai_request(
            provider="openai",
            model=model,
            request_type="chat",
            outcome="success",
            duration_seconds=1,
        )
    samples = scrape(client)
    # The served name, so `tamma_metrics_series` joins a counter's __name__.
    assert samples.value("tamma_metrics_series", family="tamma_ai_requests_total") == 2
    assert samples.value("tamma_metrics_series", family="tamma_ai_request_duration_seconds") == 2
    assert samples.value("tamma_metrics_series", family="tamma_escalations_total") == 0
    assert samples.series("tamma_ai_requests_total")  # the name it joins
    assert len(samples.series("tamma_metrics_series")) == len(
        [f for f in catalogue.families() if f.source is catalogue.Source.EVENT]
    )
