"""GitHub and GitLab webhooks: each fixture (tests/fixtures, payload shapes from the
platforms' webhook documentation, trimmed) maps onto the expected rows and counters; every
way a delivery can be wrong gets its status and changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from tamma_metrics.api import webhooks
from tamma_metrics.models import (
    Deployment,
    Incident,
    Issue,
    PullRequest,
    WebhookDelivery,
    WebhookSecret,
)
from tests.utils import delta

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = Path(__file__).parent / "fixtures" / "github"
SECRET = "It's a Secret to Everybody"
URL = "/api/v1/webhooks/github"
DELIVERIES = "tamma_metrics_webhook_deliveries_total"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(name: str, event: str, delivery: str, *, body: bytes | None = None, **headers):
    body = fixture(name) if body is None else body
    meta = {
        "HTTP_X_GITHUB_EVENT": event,
        "HTTP_X_GITHUB_DELIVERY": delivery,
        "HTTP_X_HUB_SIGNATURE_256": sign(body),
        **headers,
    }
    content_type = meta.pop("content_type", "application/json")
    return Client().post(URL, body, content_type=content_type, **meta)


@pytest.fixture(autouse=True)
def secret(settings):
    settings.TAMMA_METRICS = {"WEBHOOK_SECRETS": {"github": SECRET}}


@pytest.fixture
def tammas_pr() -> PullRequest:
    """Pull request 7 of acme/shop, opened as a draft by Tamma for issue 42."""
    issue = Issue.objects.create(
        platform="github",
        repository="acme/shop",
        external_id="42",
        issue_type="bug",
        provider="anthropic",
        status="in_progress",
    )
    return PullRequest.objects.create(
        issue=issue,
        platform="github",
        repository="acme/shop",
        number=7,
        created_at=at("2026-12-04T09:00:00Z"),
        first_commit_at=at("2026-12-04T08:00:00Z"),
        observed_at=at("2026-12-04T09:00:00Z"),
    )


def test_a_pull_requests_life_from_github_fills_its_timeline(tammas_pr, metrics):
    before = metrics()
    assert deliver("pull_request.ready_for_review", "pull_request", "d-1").status_code == 200
    changes = "pull_request_review.submitted.changes_requested"
    assert deliver(changes, "pull_request_review", "d-2").status_code == 200
    approved = deliver("pull_request_review.submitted.approved", "pull_request_review", "d-3")
    assert approved.json() == {"outcome": "applied", "result": "updated"}
    merged = deliver("pull_request.closed.merged", "pull_request", "d-4")
    assert merged.json() == {"outcome": "applied", "result": "updated"}

    row = PullRequest.objects.get()
    assert (row.status, row.merged_at, row.ready_at) == (
        "merged",
        at("2026-12-04T14:00:00Z"),
        at("2026-12-04T10:00:00Z"),
    )
    assert (row.first_review_at, row.approved_at) == (
        at("2026-12-04T11:00:00Z"),
        at("2026-12-04T13:00:00Z"),
    )
    assert (row.review_rounds, row.changes_requested) == (2, 1)
    assert (row.additions, row.deletions, row.files_changed) == (120, 30, 4)
    change = delta(metrics(), before)
    assert change.total("tamma_prs_merged_total") == 1
    stage = "tamma_pr_stage_duration_seconds_sum"
    # coding 8:00-10:00, pickup 10:00-11:00, review 11:00-13:00, merge 13:00-14:00.
    for name, hours in (("coding", 2), ("pickup", 1), ("review", 2), ("merge", 1)):
        assert change.value(stage, platform="github", stage=name) == pytest.approx(hours * 3600)
    assert change.value(DELIVERIES, platform="github", outcome="applied") == 4


def test_a_bots_review_counts_nothing_a_persons_does(tammas_pr, metrics):
    """A bot's review (``review.user.type == "Bot"``) is not a person's: no round, no
    first review, no approval, so the pickup stage waits for the person's review."""
    before = metrics()
    assert deliver("pull_request.ready_for_review", "pull_request", "d-1").status_code == 200
    # acme-review-bot[bot] approves at 10:30, half an hour after the pull request is ready.
    bot = deliver("pull_request_review.submitted.bot", "pull_request_review", "d-2")
    assert (bot.status_code, bot.json()) == (
        202,
        {"outcome": "ignored", "detail": "Ignored: a review by a bot."},
    )
    row = PullRequest.objects.get()
    assert (row.review_rounds, row.changes_requested, row.first_review_at, row.approved_at) == (
        0,
        0,
        None,
        None,
    )
    assert WebhookDelivery.objects.get(delivery_id="d-2").outcome == "ignored"
    assert deliver("pull_request_review.submitted.bot", "pull_request_review", "d-2").json() == {
        "outcome": "duplicate"
    }
    # Without review.user, the sender says who reviewed.
    payload = json.loads(fixture("pull_request_review.submitted.bot"))
    del payload["review"]["user"]
    unnamed = deliver("", "pull_request_review", "d-3", body=json.dumps(payload).encode())
    assert unnamed.json()["detail"] == "Ignored: a review by a bot."

    # octocat (a User) requests changes at 11:00 and approves at 13:00.
    name = "pull_request_review.submitted.changes_requested"
    changes = deliver(name, "pull_request_review", "d-4")
    assert changes.json() == {"outcome": "applied", "result": "updated"}
    row.refresh_from_db()
    assert (row.review_rounds, row.changes_requested, row.first_review_at, row.approved_at) == (
        1,
        1,
        at("2026-12-04T11:00:00Z"),
        None,
    )
    deliver("pull_request_review.submitted.approved", "pull_request_review", "d-5")
    row.refresh_from_db()
    assert (row.review_rounds, row.changes_requested, row.first_review_at, row.approved_at) == (
        2,
        1,
        at("2026-12-04T11:00:00Z"),
        at("2026-12-04T13:00:00Z"),
    )
    assert deliver("pull_request.closed.merged", "pull_request", "d-6").status_code == 200

    change = delta(metrics(), before)
    assert change.value(DELIVERIES, platform="github", outcome="applied") == 4
    assert change.value(DELIVERIES, platform="github", outcome="ignored") == 2
    assert change.value(DELIVERIES, platform="github", outcome="duplicate") == 1
    # Pickup from ready (10:00) to octocat's review (11:00), not to the bot's (10:30);
    # review to octocat's approval (13:00); merge at 14:00. Each stage counted once.
    stage = "tamma_pr_stage_duration_seconds"
    for name, hours in (("coding", 2), ("pickup", 1), ("review", 2), ("merge", 1)):
        labels = {"platform": "github", "stage": name}
        assert change.value(f"{stage}_count", **labels) == 1, name
        assert change.value(f"{stage}_sum", **labels) == pytest.approx(hours * 3600), name


def test_a_redelivery_counts_nothing_twice(tammas_pr, metrics):
    name = "pull_request_review.submitted.changes_requested"
    deliver(name, "pull_request_review", "same")
    before = metrics()
    again = deliver(name, "pull_request_review", "same")
    assert (again.status_code, again.json()) == (200, {"outcome": "duplicate"})
    assert PullRequest.objects.get().review_rounds == 1
    assert delta(metrics(), before).value(DELIVERIES, platform="github", outcome="duplicate") == 1


def test_a_deployment_and_an_incident_from_github(metrics):
    before = metrics()
    assert deliver("deployment_status.success", "deployment_status", "d-1").status_code == 200
    row = Deployment.objects.get()
    assert (row.external_id, row.environment, row.status) == ("42", "production", "succeeded")
    assert (row.started_at, row.finished_at) == (
        at("2026-12-04T14:40:00Z"),
        at("2026-12-04T15:00:00Z"),
    )
    assert row.commit_sha == "e5bd3914e2e596debea16f433f57875b5b90bcd6"
    assert deliver("issues.labeled.incident", "issues", "d-2").status_code == 200
    assert deliver("issues.closed.incident", "issues", "d-3").status_code == 200
    incident = Incident.objects.get()
    assert (incident.external_id, incident.severity, incident.status) == (
        "500",
        "critical",
        "resolved",
    )
    assert (incident.deployment, incident.attributed) == (row, True)  # the deploy before it
    change = delta(metrics(), before)
    assert change.value("tamma_deployments_total", platform="github", environment="production",
                        outcome="success") == 1  # fmt: skip
    assert change.value("tamma_incidents_total", severity="critical") == 1
    recovery = "tamma_failed_deployment_recovery_seconds_sum"
    assert change.value(recovery, platform="github", severity="critical") == pytest.approx(45 * 60)


@pytest.mark.parametrize(
    ("name", "event", "detail"),
    [
        ("ping", "ping", "Ignored: the event 'ping'."),
        ("ping", "star", "Ignored: the event 'star'."),
        (
            "pull_request.opened.unknown",
            "pull_request",
            "Ignored: a pull request the app does not hold.",
        ),
        (
            "deployment_status.inactive",
            "deployment_status",
            "Ignored: a deployment status 'inactive'.",
        ),
        ("issues.opened", "issues", "Ignored: an issue without the incident label."),
    ],
)
def test_what_the_app_does_not_track_is_acknowledged_and_ignored(name, event, detail, metrics):
    before = metrics()
    answer = deliver(name, event, "d-1")
    assert (answer.status_code, answer.json()) == (202, {"outcome": "ignored", "detail": detail})
    assert not (Deployment.objects.exists() or Incident.objects.exists())
    assert WebhookDelivery.objects.get().outcome == "ignored"
    assert delta(metrics(), before).value(DELIVERIES, platform="github", outcome="ignored") == 1
    # Its redelivery is a duplicate.
    assert deliver(name, event, "d-1").json() == {"outcome": "duplicate"}


def test_the_signature_is_over_the_raw_bytes(metrics):
    body = fixture("deployment_status.success")
    reserialised = json.dumps(json.loads(body)).encode()  # the same JSON, other bytes
    assert reserialised != body
    before = metrics()
    forged = deliver("deployment_status.success", "deployment_status", "d-1",
                     HTTP_X_HUB_SIGNATURE_256=sign(reserialised))  # fmt: skip
    assert forged.status_code == 401
    assert "X-Hub-Signature-256" in forged.json()["detail"]
    wrong = deliver("deployment_status.success", "deployment_status", "d-1",
                    HTTP_X_HUB_SIGNATURE_256=sign(body, "another secret"))  # fmt: skip
    assert wrong.status_code == 401
    assert not Deployment.objects.exists() and not WebhookDelivery.objects.exists()
    assert delta(metrics(), before).value(DELIVERIES, platform="github", outcome="rejected") == 2


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"HTTP_X_HUB_SIGNATURE_256": ""}, 401),
        ({"HTTP_X_HUB_SIGNATURE_256": "sha1=abc"}, 401),
        ({"content_type": "application/x-www-form-urlencoded"}, 415),
        ({"HTTP_X_GITHUB_DELIVERY": ""}, 400),
        ({"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": ""}, 411),
    ],
)
def test_bad_deliveries_get_their_status_and_change_nothing(headers, code):
    answer = deliver("deployment_status.success", "deployment_status", "d-1", **headers)
    assert answer.status_code == code, answer.content
    assert not Deployment.objects.exists() and not WebhookDelivery.objects.exists()


def test_an_oversized_body_gets_413(settings):
    settings.TAMMA_METRICS = {"WEBHOOK_SECRETS": {"github": SECRET}, "WEBHOOK_MAX_BYTES": 100}
    answer = deliver("deployment_status.success", "deployment_status", "d-1")
    assert answer.status_code == 413
    assert not Deployment.objects.exists()


def test_without_a_secret_webhooks_are_off(settings):
    settings.TAMMA_METRICS = {}
    answer = deliver("deployment_status.success", "deployment_status", "d-1")
    assert answer.status_code == 403
    assert "WEBHOOK_SECRETS" in answer.json()["detail"]


def test_a_signed_body_that_is_not_what_github_sends_names_the_field():
    payload = json.loads(fixture("deployment_status.success"))
    del payload["deployment"]["environment"]
    body = json.dumps(payload).encode()
    answer = deliver("", "deployment_status", "d-1", body=body)
    assert (answer.status_code, answer.json()) == (
        400,
        {"environment": ["environment is missing."]},
    )
    future = json.loads(fixture("deployment_status.success"))
    future["deployment_status"]["created_at"] = (
        datetime.now().astimezone() + timedelta(days=1)
    ).isoformat()
    answer = deliver("", "deployment_status", "d-2", body=json.dumps(future).encode())
    assert answer.status_code == 400
    assert set(answer.json()) == {"deployment_status.created_at"}
    assert not Deployment.objects.exists() and not WebhookDelivery.objects.exists()


def test_delivery_ids_are_forgotten_after_the_window(monkeypatch):
    old = WebhookDelivery.objects.create(platform="github", delivery_id="old", event="ping")
    WebhookDelivery.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=8))
    monkeypatch.setattr(webhooks, "_last_prune", float("-inf"))
    deliver("ping", "ping", "new")
    assert list(WebhookDelivery.objects.values_list("delivery_id", flat=True)) == ["new"]


# -- GitLab -----------------------------------------------------------------------------

GITLAB = Path(__file__).parent / "fixtures" / "gitlab"
TOKEN = "gitlab-secret-token"


def from_gitlab(name: str, delivery: str, *, token: str = TOKEN, **headers):
    meta = {"HTTP_X_GITLAB_TOKEN": token, "HTTP_IDEMPOTENCY_KEY": delivery, **headers}
    body = (GITLAB / f"{name}.json").read_bytes()
    return Client().post("/api/v1/webhooks/gitlab", body, content_type="application/json", **meta)


@pytest.fixture
def gitlab_secret(settings):
    settings.TAMMA_METRICS = {"WEBHOOK_SECRETS": {"github": SECRET, "gitlab": TOKEN}}


@pytest.fixture
def tammas_mr() -> PullRequest:
    issue = Issue.objects.create(
        platform="gitlab",
        repository="acme/api",
        external_id="7",
        issue_type="feature",
        provider="openai",
        status="in_progress",
    )
    return PullRequest.objects.create(
        issue=issue,
        platform="gitlab",
        repository="acme/api",
        number=3,
        created_at=at("2026-12-04T09:00:00Z"),
        first_commit_at=at("2026-12-04T08:00:00Z"),
        observed_at=at("2026-12-04T09:00:00Z"),
    )


def test_a_merge_requests_life_from_gitlab(gitlab_secret, tammas_mr, metrics):
    before = metrics()
    for name, delivery in (
        ("merge_request.update.ready", "g-1"),
        ("merge_request.approved", "g-2"),
        ("merge_request.merge", "g-3"),
    ):
        answer = from_gitlab(name, delivery)
        assert (answer.status_code, answer.json()["outcome"]) == (200, "applied"), name
    row = PullRequest.objects.get()
    assert (row.status, row.ready_at, row.approved_at, row.merged_at) == (
        "merged",
        at("2026-12-04T10:00:00Z"),
        at("2026-12-04T12:00:00Z"),
        at("2026-12-04T13:00:00Z"),
    )
    assert (row.first_review_at, row.review_rounds) == (at("2026-12-04T12:00:00Z"), 1)
    change = delta(metrics(), before)
    stage = "tamma_pr_stage_duration_seconds_sum"
    for name, hours in (("coding", 2), ("pickup", 2), ("review", 0), ("merge", 1)):
        assert change.value(stage, platform="gitlab", stage=name) == pytest.approx(hours * 3600)
    assert change.value(DELIVERIES, platform="gitlab", outcome="applied") == 3


def to_gitlab(payload: dict, delivery: str):
    return Client().post(
        "/api/v1/webhooks/gitlab",
        json.dumps(payload).encode(),
        content_type="application/json",
        HTTP_X_GITLAB_TOKEN=TOKEN,
        HTTP_IDEMPOTENCY_KEY=delivery,
    )


def test_a_bots_approval_on_gitlab_counts_nothing_a_persons_does(gitlab_secret, tammas_mr, metrics):
    """A bot's approval (``user.bot`` true, or the username GitLab gives an access token's
    bot) is not a person's; the person's approval is the first review."""
    before = metrics()
    assert from_gitlab("merge_request.update.ready", "g-1").json()["outcome"] == "applied"
    # review-bot (bot: true) approves at 11:00, an hour after the merge request is ready.
    bot = from_gitlab("merge_request.approved.bot", "g-2")
    assert (bot.status_code, bot.json()) == (
        202,
        {"outcome": "ignored", "detail": "Ignored: an approval by a bot."},
    )
    # A project access token's bot, named as GitLab names it, without the flag.
    payload = json.loads((GITLAB / "merge_request.approved.bot.json").read_text())
    payload["user"] = {"id": 10, "name": "deploy", "username": "project_15_bot_4f2a9c81"}
    assert to_gitlab(payload, "g-3").status_code == 202
    # The flag false and a person's username: a person.
    payload["user"] = {"id": 2, "name": "Reviewer", "username": "rev", "bot": False}
    payload["object_attributes"]["updated_at"] = "2026-12-04 12:00:00 UTC"
    row = PullRequest.objects.get()
    assert (row.review_rounds, row.first_review_at, row.approved_at) == (0, None, None)

    person = to_gitlab(payload, "g-4")
    assert person.json() == {"outcome": "applied", "result": "updated"}
    row.refresh_from_db()
    assert (row.review_rounds, row.changes_requested, row.first_review_at, row.approved_at) == (
        1,
        0,
        at("2026-12-04T12:00:00Z"),
        at("2026-12-04T12:00:00Z"),
    )
    assert from_gitlab("merge_request.merge", "g-5").json()["outcome"] == "applied"
    change = delta(metrics(), before)
    assert change.value(DELIVERIES, platform="gitlab", outcome="applied") == 3
    assert change.value(DELIVERIES, platform="gitlab", outcome="ignored") == 2
    # Pickup from ready (10:00) to the person's approval (12:00), not the bot's (11:00).
    stage = "tamma_pr_stage_duration_seconds_sum"
    for name, hours in (("coding", 2), ("pickup", 2), ("review", 0), ("merge", 1)):
        assert change.value(stage, platform="gitlab", stage=name) == pytest.approx(hours * 3600)


def test_a_deployment_and_an_incident_from_gitlab(gitlab_secret, metrics):
    before = metrics()
    assert from_gitlab("deployment.success", "g-1").status_code == 200
    row = Deployment.objects.get()
    # 14:30 at +01:00.
    assert (row.external_id, row.status, row.finished_at) == (
        "15",
        "succeeded",
        at("2026-12-04T13:30:00Z"),
    )
    assert from_gitlab("issue.open.incident", "g-2").status_code == 200
    assert from_gitlab("issue.close.incident", "g-3").status_code == 200
    incident = Incident.objects.get()
    assert (incident.external_id, incident.severity, incident.status, incident.deployment) == (
        "23",
        "medium",
        "resolved",
        row,
    )
    change = delta(metrics(), before)
    recovery = "tamma_failed_deployment_recovery_seconds_sum"
    assert change.value(recovery, platform="gitlab", severity="medium") == pytest.approx(7200)
    assert change.value("tamma_incidents_total", severity="medium") == 1


def test_gitlab_deliveries_are_checked_and_deduplicated(gitlab_secret, metrics):
    assert from_gitlab("deployment.success", "g-1", token="wrong").status_code == 401
    assert from_gitlab("deployment.success", "g-1", token="").status_code == 401
    assert not Deployment.objects.exists()
    assert from_gitlab("deployment.success", "g-1").status_code == 200
    assert from_gitlab("deployment.success", "g-1").json() == {"outcome": "duplicate"}
    # Without an Idempotency-Key the event UUID names the delivery.
    uuid = {"HTTP_IDEMPOTENCY_KEY": "", "HTTP_X_GITLAB_EVENT_UUID": "uuid-1"}
    assert from_gitlab("push", "", **uuid).status_code == 202
    assert from_gitlab("push", "", **uuid).json() == {"outcome": "duplicate"}
    canceled = from_gitlab("deployment.canceled", "g-4")
    assert canceled.json() == {
        "outcome": "ignored",
        "detail": "Ignored: a deployment status 'canceled'.",
    }
    assert Deployment.objects.count() == 1
    missing = from_gitlab("push", "", HTTP_IDEMPOTENCY_KEY="")
    assert (missing.status_code, set(missing.json())) == (400, {"Idempotency-Key"})


# -- secrets kept in the admin ----------------------------------------------------------


def add_secret(admin_client, platform: str, value: str = "") -> tuple[WebhookSecret, str]:
    answer = admin_client.post(
        "/admin/tamma_metrics/webhooksecret/add/",
        {"platform": platform, "name": f"{platform} hook", "value": value},
        follow=True,
    )
    assert answer.status_code == 200
    shown = [str(m) for m in answer.context["messages"] if "shown again" in str(m)]
    return WebhookSecret.objects.get(name=f"{platform} hook"), " ".join(shown)


def test_a_github_secret_made_in_the_admin_is_shown_once_and_signs(settings, admin_client):
    settings.TAMMA_METRICS = {}  # no secret in settings: the admin's alone
    assert deliver("ping", "ping", "p-0").status_code == 403
    row, shown = add_secret(admin_client, "github")
    value = shown.rsplit(": ", 1)[1]
    assert "it will not be shown again" in shown and len(value) >= 40
    # Kept as given (an HMAC needs it), with its digest; the pages never show it again.
    assert (row.secret, row.digest) == (value, WebhookSecret.digest_of(value))
    pages = "/admin/tamma_metrics/webhooksecret/"
    for page in (pages, f"{pages}{row.pk}/change/"):
        body = admin_client.get(page).content.decode()
        assert value not in body and row.fingerprint in body
    body = fixture("ping")
    signed = {"HTTP_X_HUB_SIGNATURE_256": sign(body, value)}
    assert deliver("ping", "ping", "p-1", **signed).status_code == 202
    assert deliver("ping", "ping", "p-2").status_code == 401  # the test's own secret
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_a_gitlab_token_is_kept_as_its_digest_only(settings, admin_client):
    settings.TAMMA_METRICS = {}
    row, shown = add_secret(admin_client, "gitlab", TOKEN)
    assert TOKEN not in shown
    assert (row.secret, row.digest) == ("", WebhookSecret.digest_of(TOKEN))
    assert not WebhookSecret.objects.filter(secret=TOKEN).exists()
    assert from_gitlab("push", "g-1").status_code == 202
    assert from_gitlab("push", "g-2", token=TOKEN + "x").status_code == 401


def test_a_secret_is_rotated_by_adding_the_new_one_first(settings, admin_client):
    # The old secret in settings, the new one in the admin: both sign until the old goes.
    row, _ = add_secret(admin_client, "github", "the-new-secret")
    body = fixture("ping")
    new = {"HTTP_X_HUB_SIGNATURE_256": sign(body, "the-new-secret")}
    assert deliver("ping", "ping", "r-1").status_code == 202
    assert deliver("ping", "ping", "r-2", **new).status_code == 202
    settings.TAMMA_METRICS = {}
    assert deliver("ping", "ping", "r-3").status_code == 401
    assert deliver("ping", "ping", "r-4", **new).status_code == 202
    # Changing the value in the admin replaces it; an empty value keeps it.
    change = f"/admin/tamma_metrics/webhooksecret/{row.pk}/change/"
    admin_client.post(change, {"name": "renamed", "value": ""})
    row.refresh_from_db()
    assert (row.name, row.secret) == ("renamed", "the-new-secret")
    admin_client.post(change, {"name": "renamed", "value": "newer"})
    row.refresh_from_db()
    assert (row.secret, row.platform) == ("newer", "github")
