"""Property-based fuzzing of the API from its own OpenAPI schema: no server error, ever,
and every answer is one the schema declares (its status code, its content type, and a body
that matches that status's schema).

schemathesis's pytest plugin does not run under pytest 9 here, so the operations'
strategies are driven with hypothesis directly.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from unittest import mock

import pytest
import schemathesis
from django.contrib.auth.models import Group, User
from django.core import signals
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import DatabaseError, close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NotSet
from werkzeug.test import Client as WsgiClient

from tamma_metrics.api import github, gitlab
from tamma_metrics.models import ApiToken, IngestedEvent, WebhookDelivery
from tamma_metrics.reports import health
from tamma_metrics.roles import OPERATOR, ORCHESTRATOR, PRODUCT_MANAGER, seed_roles

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

# Passed explicitly, these are the only checks run (schemathesis 4): each answer's status
# is declared, its content type too, and its body matches that status's schema.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SECRET = "fuzz-webhook-secret"


@pytest.fixture
def wsgi_app():
    """Django's WSGI app inside the test's transaction: like the test client, keep the
    request signals from closing the test's database connection."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(wsgi_app):
    """The API's schema with every object it declares closed (``additionalProperties:
    false``): a field a view answers that the schema does not declare fails the checks."""
    # Through the WSGI app (Django's test client would let requests close the connection).
    answer = WsgiClient(wsgi_app).get("/api/schema", headers={"Accept": "application/json"})
    raw = json.loads(answer.get_data())
    for component in raw["components"]["schemas"].values():
        if "properties" in component:
            component.setdefault("additionalProperties", False)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = wsgi_app
    return schema


@pytest.fixture
def worker_headers() -> dict[str, str]:
    seed_roles()
    user = User.objects.create_user("fuzz-worker")
    # Reports events, writes state and sees every family: every operation can answer 200.
    user.groups.add(Group.objects.get(name=ORCHESTRATOR), Group.objects.get(name=OPERATOR))
    return {"Authorization": f"Bearer {ApiToken.create_for(user, 'fuzz')[1]}"}


def _authentic(case, event: str | None) -> dict:
    """Keyword arguments for ``case.call_and_validate`` that make a webhook delivery
    authentic: the body as sent, signed (GitHub) or with the token (GitLab), and a known
    event (``event``), so that fuzzing reaches the handlers and not only the 401."""
    body = None if isinstance(case.body, NotSet) else case.body
    if event and isinstance(body, dict) and case.path.endswith("gitlab"):
        body = {**body, "object_kind": event}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if case.path.endswith("github"):
        signature = hmac.new(SECRET.encode(), data, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": f"sha256={signature}"}
        if event:
            headers["X-GitHub-Event"] = event
    else:
        headers = {"X-Gitlab-Token": SECRET}
    return {"headers": headers, "data": data}


def _fuzz(operation, mode: GenerationMode, headers: dict[str, str]) -> set[int]:
    """Call ``operation`` with 50 generated requests, each checked; the statuses answered.
    Half the webhook deliveries are made authentic, some of them with an event it handles."""
    seen: set[int] = set()
    webhook = "/webhooks/" in operation.path
    view = github.GitHubWebhookView if "github" in operation.path else gitlab.GitLabWebhookView

    # Derandomized: the same requests every run, so what the assertions below count on
    # (a signed delivery handled, a valid item written) cannot come and go with a seed.
    @hypothesis_settings(
        max_examples=50,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        signed=st.booleans(),
        event=st.sampled_from([None, *view.handlers]),
    )
    def call(case, signed, event):
        kwargs = _authentic(case, event) if webhook and signed else {"headers": dict(headers)}
        seen.add(case.call_and_validate(checks=CHECKS, **kwargs).status_code)

    call()
    return seen


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_is_declared_and_no_input_makes_a_server_error(
    api_schema, worker_headers, settings, mode
):
    settings.TAMMA_METRICS = {
        "API_THROTTLE_RATE": "100000/m",  # hundreds of requests
        "WEBHOOK_SECRETS": {"github": SECRET, "gitlab": SECRET},  # webhooks are on
    }
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "POST /api/v1/events",
        "GET /api/v1/families",
        "GET /api/v1/velocity",
        "GET /api/v1/delivery",
        "POST /api/v1/webhooks/github",
        "POST /api/v1/webhooks/gitlab",
        "GET /api/v1/health",
        "POST /api/v1/issues",
        "POST /api/v1/pull-requests",
        "POST /api/v1/approvals",
        "POST /api/v1/escalations",
        "POST /api/v1/loops/heartbeat",
        "POST /api/v1/deployments",
        "POST /api/v1/incidents",
    }
    statuses = {op.label: _fuzz(op, mode, worker_headers) for op in operations}
    every = set().union(*statuses.values())
    # The fuzzing reached real outcomes, not only one kind of refusal.
    assert every & {200, 400}
    for platform in ("github", "gitlab"):
        answered = statuses[f"POST /api/v1/webhooks/{platform}"]
        assert 401 in answered  # unsigned fuzz: the signature check, not "webhooks are off"
        assert 403 not in answered
        assert answered & {200, 202, 400}  # signed fuzz: past the signature check
    if mode is GenerationMode.POSITIVE:
        assert IngestedEvent.objects.exists() or 200 in every
        assert 201 in every  # valid state items were generated and written
        assert WebhookDelivery.objects.exists()


def test_the_reports_answer_as_declared_over_varied_data(api_schema, worker_headers):
    """Fuzzing reads the reports over a few random rows; here they are read over the demo's
    varied data (every figure has a value), for a caller who sees everything and one who
    sees part of health, and with the database down."""
    call_command("seed_demo", issues=200, stdout=io.StringIO())
    product_manager = User.objects.create_user("fuzz-pm")
    product_manager.groups.add(Group.objects.get(name=PRODUCT_MANAGER))
    pm_headers = {"Authorization": f"Bearer {ApiToken.create_for(product_manager, 'pm')[1]}"}
    calls = [
        *(("/api/v1/velocity", {"days": days}, worker_headers) for days in (7, 30, 90)),
        ("/api/v1/velocity", {"days": 90, "provider": "anthropic"}, worker_headers),
        *(("/api/v1/delivery", {"days": days}, worker_headers) for days in (7, 30, 90)),
        ("/api/v1/health", {}, worker_headers),
        ("/api/v1/health", {}, pm_headers),
    ]
    answers = {}
    for path, query, headers in calls:
        case = api_schema[path]["GET"].Case(query=query)
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        assert response.status_code == 200, response.text
        answers[path, str(query), headers is pm_headers] = response.json()
    delivery = answers["/api/v1/delivery", str({"days": 90}), False]
    assert all(delivery["keys"][key]["value"] is not None for key in delivery["bands"])
    assert answers["/api/v1/velocity", str({"days": 90}), False]["providers"]
    assert "metrics_layer" not in answers["/api/v1/health", "{}", True]
    with mock.patch.object(health, "_database", side_effect=health.DatabaseError("down")):
        case = api_schema["/api/v1/health"]["GET"].Case()
        response = case.call_and_validate(headers=worker_headers, checks=CHECKS)
    assert response.json()["database_up"] is False


def _token(username: str, role: str) -> dict[str, str]:
    user = User.objects.create_user(username)
    user.groups.add(Group.objects.get(name=role))
    return {"Authorization": f"Bearer {ApiToken.create_for(user, username)[1]}"}


def test_the_refusals_answer_as_declared(api_schema, worker_headers, settings):
    """The refusals fuzzing seldom reaches (a missing permission, a body over the limit,
    another media type, the rate limit, a database that fails, webhooks that are off)
    are declared, with the body they have."""
    orchestrator = _token("fuzz-orchestrator", ORCHESTRATOR)  # sees no family
    product_manager = _token("fuzz-pm", PRODUCT_MANAGER)  # writes nothing
    json_body = {"Content-Type": "application/json"}
    big = json.dumps({"events": [{"type": "ai_request"}] * 50}).encode()
    small = {"INGEST_MAX_BODY_BYTES": 99}
    on = {"WEBHOOK_SECRETS": {"github": SECRET, "gitlab": SECRET}}
    down = mock.patch(
        "tamma_metrics.access.visible_families", side_effect=DatabaseError("disk I/O error")
    )
    scenarios = [
        # (label, headers, body, TAMMA_METRICS, calls, the last answer's status)
        ("POST /api/v1/issues", product_manager | json_body, b"{}", {}, 1, 403),
        ("POST /api/v1/events", product_manager | json_body, b"{}", {}, 1, 403),
        ("GET /api/v1/velocity", orchestrator, None, {}, 1, 403),
        ("GET /api/v1/delivery", orchestrator, None, {}, 1, 403),
        ("GET /api/v1/health", orchestrator, None, {}, 1, 403),
        ("POST /api/v1/issues", worker_headers | {"Content-Type": "text/plain"}, b"x", {}, 1, 415),
        ("POST /api/v1/events", worker_headers | json_body, big, small, 1, 413),
        ("GET /api/v1/families", worker_headers, None, {"API_THROTTLE_RATE": "1/m"}, 2, 429),
        ("POST /api/v1/webhooks/github", json_body, b"{}", {}, 1, 403),
        ("POST /api/v1/webhooks/gitlab", json_body, big, on | {"WEBHOOK_MAX_BYTES": 100}, 1, 413),
    ]  # fmt: skip
    for label, headers, body, config, calls, expected in scenarios:
        settings.TAMMA_METRICS = config
        case = api_schema.find_operation_by_label(label).Case()
        kwargs = {"headers": headers} | ({} if body is None else {"data": body})
        for _ in range(calls):
            response = case.call_and_validate(checks=CHECKS, **kwargs)
        assert response.status_code == expected, (label, response.text)
    settings.TAMMA_METRICS = {}
    declared = [check for check in CHECKS if check is not not_a_server_error]  # 503 is meant
    with down:
        case = api_schema.find_operation_by_label("GET /api/v1/velocity").Case()
        response = case.call_and_validate(headers=worker_headers, checks=declared)
    assert (response.status_code, response.headers["retry-after"]) == (503, ["5"])
