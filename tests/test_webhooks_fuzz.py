"""Authentic deliveries with any value in any place: each fixture, signed, with one of its
values (at any depth) replaced by arbitrary JSON, is answered 200, 202 or 400 naming the
field, never a server error, and a refused delivery leaves no trace."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tamma_metrics.models import Issue, PullRequest, WebhookDelivery
from tests.test_webhooks import SECRET, TOKEN, at, sign

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(
    (path.parent.name, path.stem) for path in FIXTURES.glob("git*/*.json")
)  # (folder, name): github/, gitlab/ and the platforms' own examples in gitlab-docs/

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "closed", "success", "2026-12-04T10:00:00Z", "incident"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document, at any depth."""
    found = [prefix] if prefix else []
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        found += paths(child, (*prefix, key))
    return found


def replaced(document: Any, path: tuple, value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return copy


def post(platform: str, name: str, body: bytes, delivery: str):
    if platform == "github":
        event = name.split(".")[0]
        meta = {
            "HTTP_X_GITHUB_EVENT": event,
            "HTTP_X_GITHUB_DELIVERY": delivery,
            "HTTP_X_HUB_SIGNATURE_256": sign(body),
        }
    else:
        meta = {"HTTP_X_GITLAB_TOKEN": TOKEN, "HTTP_IDEMPOTENCY_KEY": delivery}
    return Client().post(
        f"/api/v1/webhooks/{platform}", body, content_type="application/json", **meta
    )


@pytest.fixture
def rows(settings):
    """The pull requests the fixtures are about, so every handler runs to its end."""
    settings.TAMMA_METRICS = {"WEBHOOK_SECRETS": {"github": SECRET, "gitlab": TOKEN}}
    for platform, repository, number in (("github", "acme/shop", 7), ("gitlab", "acme/api", 3)):
        issue = Issue.objects.create(
            platform=platform, repository=repository, external_id=str(number), status="in_progress"
        )
        PullRequest.objects.create(
            issue=issue,
            platform=platform,
            repository=repository,
            number=number,
            created_at=at("2026-12-04T09:00:00Z"),
            observed_at=at("2026-12-04T09:00:00Z"),
        )


@pytest.mark.parametrize(("platform", "name"), CASES, ids=[f"{p}/{n}" for p, n in CASES])
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_value_anywhere_is_answered_without_a_server_error(rows, platform, name, data):
    document = json.loads((FIXTURES / platform / f"{name}.json").read_text())
    path = data.draw(st.sampled_from(paths(document)), label="path")
    body = json.dumps(replaced(document, path, data.draw(json_values, label="value"))).encode()
    delivery = uuid.uuid4().hex
    answer = post(platform.split("-")[0], name, body, delivery)
    assert answer.status_code in (200, 202, 400, 409), answer.content
    if answer.status_code == 400:
        errors = answer.json()
        assert len(errors) == 1 and all(isinstance(v, list) for v in errors.values()), errors
    if answer.status_code in (400, 409):
        # Nothing written, and the delivery id not kept: a retry is considered again.
        assert not WebhookDelivery.objects.filter(delivery_id=delivery).exists()
