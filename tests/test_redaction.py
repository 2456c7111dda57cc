"""No personal data or secret reaches /metrics, the admissions table or the logs, through
any recording path: record, the model receivers and the ingest API."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tamma_metrics import checks, labels, record, redaction
from tamma_metrics.models import Admission, ApiToken, Deployment, Escalation, LabelPolicy
from tamma_metrics.roles import ORCHESTRATOR, PRODUCT_MANAGER, seed_roles
from tests import factories
from tests.utils import client_of, delta, scrape

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


# Personal data by kind (the rule's name in redaction.findings), what must be caught ...
CAUGHT: dict[str, list[str]] = {
    "phone number": [
        "+44 20 7946 0958",
        "+1 (555) 123-4567",
        "+33 6 12 34 56 78",
        "+4915112345678",
        "+44 (0)20 7946 0958",
        "0044 20 7946 0958",
        "call 555-123-4567 now",
        "oncall-555-123-4567",
        "(555) 123-4567",
        "555.123.4567",
        "1-555-123-4567",
        "020 7946 0958",
        "07700 900123",
        "06 12 34 56 78",
        "06.12.34.56.78",
        "0612345678",
        "030/1234567",
        "review/+33612345678",
    ],
    "payment card number": [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "378282246310005",  # American Express, 15 digits
        "4222222222222",  # Visa, 13 digits
        "6011 1111 1111 1117",
        "card:5555555555554444",
        "review/4012888888881881",
    ],
    "IP address": [
        "192.168.1.10",
        "10.0.0.1:8080",
        "host=203.0.113.7",
        "ip-198.51.100.23",
        "2001:db8::1",
        "fe80::1%eth0",
        "::1",
        "::ffff:192.0.2.1",
        "[2001:db8::1]:443",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "review/2001:db8::42",
    ],
    "person name (first.last)": [
        "jane.doe",
        "Jane.Doe",
        "JANE.DOE",
        "deployed by jane.doe",
        "by jane.doe.",
        "(jane.doe)",
        "review/jane.doe",
        "jane.doe/fix-login",
        "user:jane.doe",
        "josé.garcía",
    ],
    "absolute file path": ["/home/jane/notes.txt", "/Users/jane", "file=/etc/passwd", "/tmp"],
    "home directory path": ["~/projects/x", "~jane/notes"],
    "Windows file path": [
        "C:\\Users\\jane\\Desktop",
        "c:/users/jane",
        "D:\\build",
        "\\\\fileserver\\share",
    ],
}
# ... and what is near enough to be mistaken for it, yet must pass.
NEAR_MISSES: dict[str, list[str]] = {
    "phone number": [
        "1.2.3",
        "v1.2.3",
        "1.0.0+20130313144700",  # semver build metadata
        "2026-12-08",
        "2026-12-08T10:00:00Z",
        "08.12.2026",
        "08-12-2026 10:00",
        "12/08/2026",
        "20261208",
        "12345",
        "1234567",
        "555-1234",
        "404",
        "+1",
        "gpt-4-0613",
        "claude-3-5-sonnet-20241022",
        "run-0001-0002-0003",
        "1733650000",
    ],
    "payment card number": [
        "4111 1111 1111 1112",  # fails the Luhn check
        "1234567890123",
        "411111111111",  # 12 digits
        "4111.1111.1111.1111",
        "2026-12-08-10-00-00",
    ],
    "IP address": [
        "1.2.3",
        "v1.2.3.4",
        "256.1.1.1",
        "1.2.3.4.5",
        "10.0.19041.1",
        "10:00:00",
        "dead::beef",
        "std::vector",
        "00:1a:2b:3c:4d:5e",
        "llama3.1:8b",
    ],
    "person name (first.last)": [
        "gpt-4.1",
        "claude-3.5-sonnet",
        "api.github",
        "node.js",
        "v1.2",
        "us-east-1.prod",
        "prod.eu",
        "web.prod",
        "anthropic.claude",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
        "amazon.titan-text-express-v1",
        "1.0.0-alpha.beta",
        "setup.py",
        "package.json",
        "Dockerfile.prod",
        "asp.net",
        "socket.io",
        "deployment.failed",
        "com.example.app",
        "jane_doe",
    ],
    "file path": [
        "review/feature-123",
        "review/feature-x",
        "feature/JIRA-1234",
        "ci/cd",
        "N/A",
        "and/or",
        "openai/gpt-4.1",
        "https://example.com/docs",
        "s3://bucket/key",
        "~1.2.3",
        "admin:index",
    ],
}
# What free-form labels carry in practice: none of it may be redacted.
ORDINARY += [
    # environments (deployments_total)
    "production",
    "staging",
    "review/feature-123",
    "review/fix-login-2026-12-08",
    "eu-west-prod",
    "prod-eu-west-1",
    "preview-1",
    "us-east-1.prod",
    "staging.eu",
    "k8s-prod-cluster-01",
    "review/dependabot-npm_and_yarn-lodash-4.17.21",
    # models
    "gpt-4.1",
    "gpt-4o-mini",
    "gpt-3.5-turbo-0125",
    "o3-mini",
    "claude-3.5-sonnet",
    "claude-opus-4-1-20250805",
    "gemini-2.5-pro",
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "cohere.command-r-plus-v1:0",
    "llama3.1:8b",
    "qwen2.5-coder:7b",
    "openai/gpt-4.1",
    "text-embedding-3-large",
    # components, reasons, languages, frameworks, file types, endpoints, status codes
    "test_runner",
    "ai_gateway",
    "reviewer.bot",
    "deployment.failed",
    "c++",
    "objective-c",
    "vue.js",
    "asp.net",
    ".py",
    "Dockerfile",
    "admin:index",
    "tamma_metrics:api-deployments",
    "404",
]


@pytest.mark.parametrize("value", PRIVATE)
def test_private_values_are_recognised(value):
    assert redaction.private(value)


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_values_are_not(value):
    assert not redaction.private(value), redaction.findings(value)


@pytest.mark.parametrize(
    ("kind", "value"), [(kind, value) for kind, values in CAUGHT.items() for value in values]
)
def test_personal_data_is_caught_by_its_own_rule(kind, value):
    assert redaction.private(value)
    assert kind in redaction.findings(value)


@pytest.mark.parametrize(
    ("kind", "value"), [(kind, value) for kind, values in NEAR_MISSES.items() for value in values]
)
def test_near_misses_are_not_caught(kind, value):
    assert not redaction.private(value), redaction.findings(value)


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


# One environment per kind of personal data, as a team could name one by mistake (64
# characters at most: the column's width).
ENVIRONMENTS = [
    "+44 20 7946 0958",
    "oncall-555-123-4567",
    "4111 1111 1111 1111",
    "203.0.113.7",
    "2001:db8::1",
    "review/jane.doe",
    "Jane.Doe",
    "/home/jane/deploy",
    "~/envs/prod",
    "C:\\Users\\jane\\deploy",
    "jane.doe@example.com",
]


def _shown(value: str) -> set[str]:
    """The ways ``value`` could still show in a label: as sent, lower-cased, normalised,
    and its digits alone (a number survives normalisation that drops its separators)."""
    safe = labels.normalise(value, lowercase=False)
    digits = "".join(c for c in value if c.isdigit())
    forms = {value, value.lower(), safe, safe.lower()}
    return forms | ({digits} if len(digits) >= 8 else set())


def test_a_deployment_environment_with_personal_data_reaches_no_output(client, metrics):
    """Through the state API: the row, /metrics and the admissions never show it, and the
    redactions counter counts each exactly once; an ordinary environment is kept."""
    tamma = client_of(ORCHESTRATOR, "tamma")
    before = metrics()
    for n, environment in enumerate([*ENVIRONMENTS, "review/feature-123"]):
        item = {
            "platform": "github",
            "repository": "acme/shop",
            "external_id": f"d-{n}",
            "environment": environment,
            "status": "succeeded",
            "started_at": "2026-12-01T10:00:00Z",
            "observed_at": "2026-12-01T10:05:00Z",
        }
        response = tamma.post("/api/v1/deployments", item, content_type="application/json")
        assert response.status_code == 201, response.content
        if environment in ENVIRONMENTS:
            assert response.json()["results"][0]["folded"] == [
                {"family": "deployments_total", "label": "environment", "recorded_as": "redacted"}
            ]
    rows = dict(Deployment.objects.values_list("external_id", "environment"))
    assert rows == {
        **{f"d-{n}": "redacted" for n in range(len(ENVIRONMENTS))},
        f"d-{len(ENVIRONMENTS)}": "review/feature-123",
    }
    outputs = {
        "metrics": client.get("/metrics").content.decode(),
        "admissions": " ".join(Admission.objects.values_list("key", flat=True)),
    }
    for value in ENVIRONMENTS:
        for where, text in outputs.items():
            for form in _shown(value):
                assert form not in text, f"{form!r} of {value!r} in {where}"
    change = delta(metrics(), before)
    redactions = "tamma_metrics_label_redactions_total"
    assert change.series(redactions) == {
        frozenset({("family", "deployments_total"), ("label", "environment")}): len(ENVIRONMENTS)
    }
    deployments = "tamma_deployments_total"
    assert change.value(deployments, platform="github", environment="redacted",
                        outcome="success") == len(ENVIRONMENTS)  # fmt: skip
    assert change.value(deployments, platform="github", environment="review/feature-123",
                        outcome="success") == 1  # fmt: skip


def test_an_environment_closed_in_the_admin_folds_what_it_does_not_list(metrics):
    """The other way to keep personal data out: a closed vocabulary, edited as a label
    policy; unlisted values fold to other (counted as folds), in the row and the counter."""
    LabelPolicy.objects.update_or_create(
        label="environment",
        family="deployments_total",
        defaults={"closed": True, "allowed_values": "production\nstaging"},
    )
    tamma = client_of(ORCHESTRATOR, "tamma")
    before = metrics()
    for n, environment in enumerate(["Production", "staging", "Jane.Doe", "+44 20 7946 0958"]):
        item = {
            "platform": "github",
            "repository": "acme/shop",
            "external_id": f"d-{n}",
            "environment": environment,
            "status": "succeeded",
            "observed_at": "2026-12-01T10:05:00Z",
        }
        response = tamma.post("/api/v1/deployments", item, content_type="application/json")
        assert response.status_code == 201, response.content
    rows = sorted(Deployment.objects.values_list("environment", flat=True))
    assert rows == ["other", "other", "production", "staging"]
    change = delta(metrics(), before)
    labels_of = {"family": "deployments_total", "label": "environment"}
    assert change.value("tamma_metrics_label_folds_total", **labels_of) == 2
    assert change.value("tamma_metrics_label_redactions_total", **labels_of) == 0
    assert change.total("tamma_deployments_total", environment="other") == 2
    assert not any("jane" in value.lower() for key in change for _, value in key[1])


GITHUB_DEPLOYMENT = Path(__file__).parent / "fixtures" / "github" / "deployment_status.success.json"


def test_a_webhook_environment_with_personal_data_is_redacted(settings, metrics):
    secret = "webhook secret"
    settings.TAMMA_METRICS = {"WEBHOOK_SECRETS": {"github": secret}}
    payload = json.loads(GITHUB_DEPLOYMENT.read_text())
    payload["deployment"]["environment"] = payload["deployment_status"]["environment"] = (
        "review/jane.doe"
    )
    body = json.dumps(payload).encode()
    before = metrics()
    response = Client().post(
        "/api/v1/webhooks/github",
        body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT="deployment_status",
        HTTP_X_GITHUB_DELIVERY="pii-1",
        HTTP_X_HUB_SIGNATURE_256="sha256="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    )
    assert response.status_code == 200, response.content
    assert Deployment.objects.get().environment == "redacted"
    change = delta(metrics(), before)
    assert not any("jane" in value for key in change for _, value in key[1])
    assert (
        change.value(
            "tamma_metrics_label_redactions_total", family="deployments_total", label="environment"
        )
        == 1
    )


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
