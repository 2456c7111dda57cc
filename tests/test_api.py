"""POST /api/v1/events and GET /api/v1/families: validation, exactly once, auth, limits."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tamma_metrics.api import views as api_views
from tamma_metrics.models import ApiToken, IngestedEvent
from tamma_metrics.roles import PRODUCT_MANAGER, PROMETHEUS, WORKER, seed_roles
from tests.utils import delta

pytestmark = pytest.mark.django_db

AI = {
    "type": "ai_request",
    "provider": "anthropic",
    "model": "claude-sonnet",
    "request_type": "chat",
    "outcome": "success",
    "duration_seconds": 12.5,
    "tokens": {"input": 1200, "output": 300},
    "cost_usd": 0.021,
}
AI_LABELS = {"provider": "anthropic", "model": "claude-sonnet", "request_type": "chat"}


def token_of(role: str, username: str) -> str:
    user = User.objects.create_user(username)
    user.groups.add(Group.objects.get(name=role))
    return ApiToken.create_for(user, "t")[1]


@pytest.fixture
def worker():
    """A client acting as a Tamma worker (the worker role's token)."""
    seed_roles()
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_of(WORKER, 'worker-1')}")


def post(client: Client, body, **extra):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post("/api/v1/events", raw, content_type="application/json", **extra)


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [("issue_transition", "/api/v1/issues"), ("escalation", "/api/v1/escalations")],
)
def test_domain_events_are_refused_with_a_pointer_to_the_state_api(worker, metrics, kind, endpoint):
    # An event that no row holds would count on /metrics and be missing from every page.
    before = metrics()
    response = post(worker, {"type": kind, "event_id": "w1-1", "severity": "high"})
    assert response.status_code == 400
    assert response.json()["results"] == [
        {
            "index": 0,
            "event_id": "w1-1",
            "status": "rejected",
            "errors": {
                "type": [
                    f"{kind} is state, not an event: POST it to {endpoint} (the state API), "
                    "so the row and the counter agree."
                ]
            },
        }
    ]
    changed = delta(metrics(), before).names()
    assert not {n for n in changed if n.startswith(("tamma_escalations", "tamma_issue"))}
    assert IngestedEvent.objects.count() == 0


def test_one_ai_request_is_counted_exactly(worker, metrics):
    before = metrics()
    response = post(worker, {**AI, "event_id": "w1-000042"})
    assert response.status_code == 200
    assert response.json() == {
        "counted": 1,
        "duplicates": 0,
        "rejected": 0,
        "results": [{"index": 0, "event_id": "w1-000042", "status": "counted"}],
    }
    change = delta(metrics(), before)
    assert change.value("tamma_ai_requests_total", **AI_LABELS, outcome="success") == 1
    assert change.value(
        "tamma_ai_request_duration_seconds_sum", **AI_LABELS, token_range="1k-10k"
    ) == pytest.approx(12.5)
    assert (
        change.value(
            "tamma_ai_tokens_total", provider="anthropic", model="claude-sonnet", token_type="input"
        )
        == 1200
    )
    assert change.value(
        "tamma_ai_cost_usd_total", provider="anthropic", model="claude-sonnet"
    ) == pytest.approx(0.021)


def test_every_event_type_records_its_family(worker, metrics):
    before = metrics()
    events = [
        {
            "type": "test_execution",
            "test_type": "unit",
            "framework": "pytest",
            "language": "python",
            "result": "success",
            "duration_seconds": 30,
        },
        {
            "type": "code_generation",
            "provider": "openai",
            "language": "go",
            "complexity": "high",
            "file_count": 3,
            "duration_seconds": 60,
        },
        {
            "type": "code_change",
            "change_type": "update",
            "language": "go",
            "actor": "system",
            "file_type": "go",
            "count": 4,
        },
    ]
    response = post(worker, {"events": events})
    assert response.json()["counted"] == 3
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_test_execution_duration_seconds_sum",
            test_type="unit",
            framework="pytest",
            language="python",
            result="success",
        )
        == 30
    )
    assert (
        change.value(
            "tamma_code_generation_duration_seconds_count",
            provider="openai",
            language="go",
            complexity="high",
            file_count="2-5",
        )
        == 1
    )
    assert (
        change.value(
            "tamma_code_changes_total",
            change_type="update",
            language="go",
            actor="system",
            file_type="go",
        )
        == 4
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"type": "ai_requests"}, "type", "Unknown event type"),
        ({"type": None}, "type", "This field is required."),
        ({"type": ["ai_request"]}, "type", "Must be a string"),
        ({"type": {"name": "ai_request"}}, "type", "Must be a string"),
        ({"type": 7}, "type", "Must be a string"),
        ({"colour": "blue"}, "colour", "Unknown field."),
        ({"model": None}, "model", "This field may not be null."),
        ({"duration_seconds": -1}, "duration_seconds", "greater than or equal to 0"),
        ({"duration_seconds": "NaN"}, "duration_seconds", "Must be a finite number."),
        ({"duration_seconds": 1e12}, "duration_seconds", "at most 2592000 seconds"),
        ({"duration_seconds": True}, "duration_seconds", "A valid number is required."),
        ({"cost_usd": -0.01}, "cost_usd", "greater than or equal to 0"),
        ({"cost_usd": 1e308}, "cost_usd", "Must be at most 1000."),
        ({"tokens": {"input": 10**30}}, "tokens", "Must be at most 10000000."),
        ({"tokens": {"output": int("9" * 400)}}, "tokens", "Must be at most 10000000."),
        ({"tokens": {"thinking": 5}}, "tokens", "Unknown field."),
        ({"tokens": {"input": -5}}, "tokens", "greater than or equal to 0"),
        ({"tokens": {"input": 1.5}}, "tokens", "A valid integer is required."),
        ({"event_id": "has space"}, "event_id", "does not match"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, "timestamp", "Must not be in the future."),
        ({"timestamp": "yesterday"}, "timestamp", "Datetime has wrong format"),
        ({"provider": "x" * 201}, "provider", "no more than 200 characters"),
    ],
)
def test_each_invalid_field_is_named_in_a_400(worker, metrics, change, field, message):
    event = {**AI, **change}
    if change.get("type", "") is None:
        del event["type"]
    if change.get("model", "") is None:
        del event["model"]
        message = "This field is required."
    before = metrics()
    response = post(worker, event)
    assert response.status_code == 400
    body = response.json()
    assert (body["counted"], body["rejected"]) == (0, 1)
    assert message in json.dumps(body["results"][0]["errors"][field])
    assert not delta(metrics(), before).total("tamma_ai_requests_total")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_name_the_field(worker, literal):
    raw = json.dumps(AI).replace('"duration_seconds": 12.5', f'"duration_seconds": {literal}')
    response = post(worker, raw)
    assert response.status_code == 400
    assert response.json()["results"][0]["errors"] == {
        "duration_seconds": ["Must be a finite number."]
    }


@pytest.mark.parametrize(
    "body",
    [
        '[{"type": "ai_request"}]',
        '{"events": []}',
        '{"events": {}}',
        '{"events": [], "extra": 1}',
        "not json",
        "42",
    ],
)
def test_malformed_bodies_are_400(worker, body):
    response = post(worker, body)
    assert response.status_code == 400
    assert "detail" in response.json()


def test_a_batch_with_good_and_bad_events(worker, metrics):
    before = metrics()
    response = post(
        worker,
        {
            "events": [
                {**AI, "event_id": "b-1"},
                {**AI, "duration_seconds": -3, "event_id": "b-2"},
                "not an object",
                {**AI, "event_id": "b-1"},
                {**AI, "model": "claude-opus", "event_id": "b-3"},
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["counted"], body["duplicates"], body["rejected"]) == (2, 1, 2)
    assert [r["status"] for r in body["results"]] == [
        "counted",
        "rejected",
        "rejected",
        "duplicate",
        "counted",
    ]
    assert body["results"][2]["errors"] == {
        "non_field_errors": ["Each event must be a JSON object."]
    }
    change = delta(metrics(), before)
    assert change.total("tamma_ai_requests_total") == 2
    # A rejected event leaves no id behind: fixed and retried, it counts.
    assert not IngestedEvent.objects.filter(event_id="b-2").exists()
    assert post(worker, {**AI, "event_id": "b-2"}).json()["counted"] == 1


def test_retries_are_counted_once_within_the_window_whoever_sends_them(worker, metrics):
    seed_roles()
    other = Client(HTTP_AUTHORIZATION=f"Bearer {token_of(WORKER, 'worker-2')}")
    before = metrics()
    assert post(worker, {**AI, "event_id": "retry-1"}).json()["counted"] == 1
    assert post(worker, {**AI, "event_id": "retry-1"}).json()["duplicates"] == 1
    # A retry under another worker's token is the same event.
    assert post(other, {**AI, "event_id": "retry-1"}).json()["duplicates"] == 1
    assert delta(metrics(), before).total("tamma_ai_requests_total") == 1
    # Past the window the id is pruned, and the same id counts again.
    IngestedEvent.objects.update(received_at=timezone.now() - timedelta(days=2))
    api_views._last_prune = float("-inf")
    assert post(worker, {**AI, "event_id": "retry-1"}).json()["counted"] == 1
    assert IngestedEvent.objects.count() == 1


def test_a_batch_claims_its_ids_in_one_statement_and_counts_each_once(worker, metrics):
    """100 events with ids: one INSERT claims them all (one transaction, not one per event);
    an id already held and an id twice in the batch are duplicates, in order."""
    assert post(worker, {**AI, "event_id": "held-1"}).json()["counted"] == 1
    events = [{**AI, "event_id": f"b-{n:03d}"} for n in range(100)]
    events[10] = {**AI, "event_id": "held-1"}
    events[20] = {**AI, "event_id": "b-005"}
    events[30] = {**AI}  # no id: counted as it comes
    events[40] = {**AI, "event_id": "b-041", "duration_seconds": -1}  # rejected: not claimed
    before = metrics()
    with CaptureQueriesContext(connection) as executed:
        body = post(worker, {"events": events}).json()
    claims = [q["sql"] for q in executed.captured_queries if "ingestedevent" in q["sql"].lower()]
    assert len([sql for sql in claims if sql.startswith("INSERT")]) == 1
    assert (body["counted"], body["duplicates"], body["rejected"]) == (97, 2, 1)
    statuses = {r["index"]: r["status"] for r in body["results"]}
    assert (statuses[5], statuses[10], statuses[20], statuses[30], statuses[40]) == (
        "counted",
        "duplicate",
        "duplicate",
        "counted",
        "rejected",
    )
    assert delta(metrics(), before).total("tamma_ai_requests_total") == 97
    assert IngestedEvent.objects.count() == 1 + 96  # held-1 and the 96 ids claimed now
    # The whole batch again: every id is a duplicate; only the event without an id counts.
    again = post(worker, {"events": events}).json()
    assert (again["counted"], again["duplicates"], again["rejected"]) == (1, 98, 1)


def test_folded_label_values_are_reported_not_rejected(worker, metrics):
    before = metrics()
    response = post(worker, {**AI, "provider": "DeepSeek", "outcome": "meh"})
    assert response.status_code == 200
    result = response.json()["results"][0]
    assert result["status"] == "counted"
    assert result["folded"] == [
        {"family": "ai_requests_total", "label": "provider", "recorded_as": "other"},
        {"family": "ai_requests_total", "label": "outcome", "recorded_as": "other"},
        {"family": "ai_request_duration_seconds", "label": "provider", "recorded_as": "other"},
        {"family": "ai_tokens_total", "label": "provider", "recorded_as": "other"},
        {"family": "ai_tokens_total", "label": "provider", "recorded_as": "other"},
        {"family": "ai_cost_usd_total", "label": "provider", "recorded_as": "other"},
    ]
    assert (
        delta(metrics(), before).value(
            "tamma_ai_requests_total",
            provider="other",
            model="claude-sonnet",
            request_type="chat",
            outcome="other",
        )
        == 1
    )


def test_over_size_batch_and_body_are_413(worker, settings, metrics):
    settings.TAMMA_METRICS = {"INGEST_MAX_BATCH": 3}
    before = metrics()
    response = post(worker, {"events": [AI] * 4})
    assert response.status_code == 413
    assert response.json() == {"detail": "At most 3 events per request."}
    settings.TAMMA_METRICS = {"INGEST_MAX_BODY_BYTES": 100}
    response = post(worker, AI)
    assert response.status_code == 413
    assert not delta(metrics(), before).total("tamma_ai_requests_total")


def test_without_credentials_401_with_the_challenge():
    response = post(Client(), AI)
    assert response.status_code == 401
    assert 'Bearer realm="tamma-metrics"' in response["WWW-Authenticate"]
    bad = post(Client(HTTP_AUTHORIZATION="Bearer tmm_nope_nope"), AI)
    assert bad.status_code == 401


def test_a_token_without_add_event_is_403():
    seed_roles()
    scraper = Client(HTTP_AUTHORIZATION=f"Bearer {token_of(PROMETHEUS, 'prom')}")
    response = post(scraper, AI)
    assert response.status_code == 403
    assert "add_event" in response.json()["detail"]


def test_throttled_callers_get_429_with_retry_after(worker, settings):
    settings.TAMMA_METRICS = {"API_THROTTLE_RATE": "2/m"}
    assert [post(worker, AI).status_code for _ in range(3)] == [200, 200, 429]
    assert int(post(worker, AI)["Retry-After"]) >= 1


def test_session_posts_need_the_csrf_token():
    seed_roles()
    user = User.objects.create_user("browser")
    user.groups.add(Group.objects.get(name=WORKER))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = post(client, AI)
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_auth_off_for_metrics_does_not_open_the_api(settings):
    settings.TAMMA_METRICS = {"AUTH_ENABLED": False}
    assert post(Client(), AI).status_code == 401


def test_families_say_what_the_caller_may_see():
    seed_roles()
    pm = Client(HTTP_AUTHORIZATION=f"Bearer {token_of(PRODUCT_MANAGER, 'pm')}")
    rows = {row["name"]: row for row in pm.get("/api/v1/families").json()}
    assert rows["issues_processed_total"]["visible"] is True
    assert rows["ai_requests_total"]["visible"] is False
    assert rows["ai_request_duration_seconds"]["buckets"][:2] == [0.1, 0.25]
    assert rows["queue_depth"] == {
        "name": "queue_depth",
        "full_name": "tamma_queue_depth",
        "type": "gauge",
        "help": "Work items queued and not yet started.",
        "labels": ["queue_type", "priority"],
        "buckets": [],
        "audience": "operations",
        "source": "database",
        "visible": False,
    }
    worker_rows = (
        Client(HTTP_AUTHORIZATION=f"Bearer {token_of(WORKER, 'w')}").get("/api/v1/families").json()
    )
    assert not any(row["visible"] for row in worker_rows)
    assert Client().get("/api/v1/families").status_code == 401


def test_schema_and_docs_are_served():
    schema = Client().get("/api/schema", HTTP_ACCEPT="application/json").json()
    union = schema["components"]["schemas"]["Event"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == {
        "ai_request",
        "test_execution",
        "code_generation",
        "code_change",
    }
    assert set(schema["paths"]) == {
        "/api/v1/events",
        "/api/v1/families",
        "/api/v1/velocity",
        "/api/v1/delivery",
        "/api/v1/webhooks/github",
        "/api/v1/webhooks/gitlab",
        "/api/v1/health",
        "/api/v1/issues",
        "/api/v1/pull-requests",
        "/api/v1/approvals",
        "/api/v1/escalations",
        "/api/v1/loops/heartbeat",
        "/api/v1/deployments",
        "/api/v1/incidents",
    }
    # Every answer is declared with a typed body (tests/test_api_schemathesis.py checks
    # the bodies), the refusals of a whole request as {"detail": ...}.
    untyped = {"type": "object", "additionalProperties": {}}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"200", "401"} <= set(responses), (method, path)
            for code, response in responses.items():
                body = response["content"]["application/json"]["schema"]
                assert body != untyped, (method, path, code)
            assert responses["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    docs = Client().get("/api/docs")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"events": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"type": "ai_request", "x": ' + "{" * 3000,
    ],
)
def test_deeply_nested_bodies_get_400_not_a_500(worker, body):
    response = post(worker, body)
    assert response.status_code == 400
    assert "nested deeper than" in response.json()["detail"]
    assert IngestedEvent.objects.count() == 0


def test_brackets_inside_strings_do_not_count_as_nesting(worker):
    event = {**AI, "event_id": "nest-1", "model": '[[[[[[[[[[[[[[[[[[[[[[[\\"{{{{{{{{{{{{{{{{{{{'}
    response = post(worker, event)
    assert response.status_code == 200, response.content
    assert response.json()["counted"] == 1


def test_a_chunked_body_without_length_gets_411(worker):
    body = json.dumps({**AI, "event_id": "chunk-1"})
    # What gunicorn hands Django for a chunked request: no Content-Length.
    response = post(worker, body, HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="")
    assert response.status_code == 411
    assert "Content-Length" in response.json()["detail"]
    assert not IngestedEvent.objects.filter(event_id="chunk-1").exists()


def test_error_pages_show_no_internals(client, settings):
    assert settings.DEBUG is False
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert b"URLconf" not in missing.content
    assert b"metrics/health" not in missing.content
