"""No personal data or secret reaches /metrics, the admissions table or the logs, through
any recording path: record, the model receivers and the ingest API."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tamma_metrics import checks, record, redaction
from tamma_metrics.models import Admission, ApiToken, Escalation
from tamma_metrics.roles import ORCHESTRATOR, PRODUCT_MANAGER, seed_roles
from tests import factories
from tests.utils import delta, scrape

pytestmark = pytest.mark.django_db(transaction=True)

PRIVATE = [
    "jane.doe@example.com",
    "escalated by Jane <jane.doe+tamma@mail.example.co.uk>",
    "https://bob:hunter2@git.example.com/repo.git",
    "https://example.com/callback?code=abc123&state=x",
    "token=sk-live-4f9a8b7c6d5e4f3a2b1c",
    "password: Winter2026!",
    "api_key=AIzaSyD-1234567890abcdefghijklmnopqrstu",
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
    "ghp_0123456789abcdefghijABCDEFGHIJ0123",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "glpat-abcdefghij0123456789",
    "xoxb-1234567890-abcdefghij",
    "AKIAIOSFODNN7EXAMPLE",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "Authorization: Bearer abcdefgh12345678",
    "-----BEGIN RSA PRIVATE KEY-----",
    "3f786850e387550fdab836ed7e6dc881de23001b",  # a hash: random, unbounded
    "tmm_ab12cd34_0123456789abcdefghijklmnopqrstuv",
]
ORDINARY = [
    "missing_context",
    "secret_detected",
    "token_limit_exceeded",
    "rate_limit",
    "claude-3-5-sonnet-20241022",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "feature-add-retries-to-the-github-webhook-handler-2",
    "password_reset_flow",
    "https://example.com/docs",
    "orchestrator",
    "other",
]


@pytest.mark.parametrize("value", PRIVATE)
def test_private_values_are_recognised(value):
    assert redaction.private(value)


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_values_are_not(value):
    assert not redaction.private(value)


REASON_LENGTH = Escalation._meta.get_field("reason").max_length


def _forms(value: str) -> set[str]:
    """The value and the pieces of it a normalised label could still show."""
    pieces = {value, value.lower()}
    pieces |= {part for part in value.replace("@", " ").replace("=", " ").split() if len(part) > 6}
    return pieces


def _token(role: str, username: str) -> str:
    user = User.objects.create_user(username)
    user.groups.add(Group.objects.get(name=role))
    return ApiToken.create_for(user, "t")[1]


def test_private_values_reach_no_output_from_any_recording_path(client, caplog):
    """Seed every private value through record, a model save and the state API; read
    /metrics as the product manager and as a superuser, the admissions and the logs."""
    seed_roles()
    tamma = Client(HTTP_AUTHORIZATION=f"Bearer {_token(ORCHESTRATOR, 'tamma')}")
    manager = Client(HTTP_AUTHORIZATION=f"Bearer {_token(PRODUCT_MANAGER, 'pm-1')}")
    before = scrape(client)
    caplog.set_level(logging.DEBUG)
    for n, value in enumerate(PRIVATE):
        record.escalation(escalation_type="safety", severity="high", component=value, reason=value)
        # A model keeps what its column holds (64 characters): still private.
        factories.escalation(reason=value[:REASON_LENGTH], component="reviewer")
        item = {"external_id": f"pii-{n}", "escalation_type": "safety", "severity": "low",
                "component": "git", "reason": value[:REASON_LENGTH],
                "observed_at": "2026-12-01T10:00:00Z"}  # fmt: skip
        response = tamma.post("/api/v1/escalations", item, content_type="application/json")
        assert response.status_code == 201, response.content
        reported = response.json()["results"][0]["folded"]
        assert reported == [
            {"family": "escalations_total", "label": "reason", "recorded_as": "redacted"}
        ]
    # The row holds what the counter records: not the private value.
    assert set(Escalation.objects.filter(external_id__startswith="pii-").values_list(
        "reason", flat=True)) == {"redacted"}  # fmt: skip
    outputs = {
        "product manager": manager.get("/metrics").content.decode(),
        "superuser": client.get("/metrics").content.decode(),
        "admissions": " ".join(Admission.objects.values_list("key", flat=True)),
        "logs": caplog.text,
    }
    for value in PRIVATE:
        for where, text in outputs.items():
            for form in _forms(value):
                assert form not in text, f"{form!r} of {value!r} in {where}"
    change = delta(scrape(client), before)
    events = len(PRIVATE)
    assert (
        change.value(
            "tamma_metrics_label_redactions_total", family="escalations_total", label="reason"
        )
        == 3 * events
    )
    assert (
        change.value(
            "tamma_metrics_label_redactions_total", family="escalations_total", label="component"
        )
        == events
    )
    # Every event is still counted, under the redacted value.
    assert change.total("tamma_escalations_total", reason="redacted") == 3 * events


def test_projects_add_their_own_patterns(settings, metrics):
    settings.TAMMA_METRICS = {"REDACT_LABEL_PATTERNS": [r"(?i)^cust-\d{6}$"]}
    before = metrics()
    record.escalation(escalation_type="blocked", severity="low", component="git",
                      reason="CUST-123456")  # fmt: skip
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_metrics_label_redactions_total", family="escalations_total", label="reason"
        )
        == 1
    )
    assert not any("123456" in value for key in change for _, value in key[1])


@pytest.mark.parametrize(
    "options",
    [
        {"REDACT_LABEL_PATTERNS": ["(unclosed"]},
        {"REDACT_LABEL_PATTERNS": "x"},
        {"REDACTED_VALUE": ""},
    ],  # fmt: skip
)
def test_bad_redaction_settings_are_errors(settings, options):
    settings.TAMMA_METRICS = options
    assert {error.id for error in checks.check_settings()} == {"tamma_metrics.E015"}
