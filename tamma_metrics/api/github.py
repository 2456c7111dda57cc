"""GitHub's webhooks (docs/webhooks.md): ``POST /api/v1/webhooks/github``.

GitHub signs the raw body with the webhook's secret (``X-Hub-Signature-256:
sha256=<HMAC-SHA256>``); the HMAC is computed over the bytes received, never over a
re-serialised body, and compared in constant time. ``pull_request`` updates a pull
request the app already holds (Tamma's, written through the state API; others are
ignored: nothing in them says which issue they belong to), ``pull_request_review`` its
timeline (a person's review; a bot's is ignored), ``deployment_status`` a deployment,
``issues`` with the incident label an incident.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from ..models import PullRequest
from ..state import reviews
from .schema import WEBHOOK_REQUEST, WEBHOOK_RESPONSES
from .webhooks import (
    Ignored,
    Secret,
    WebhookView,
    apply_item,
    field,
    incident_severity,
    label_names,
    moment,
)

__all__ = ["GitHubWebhookView"]

PLATFORM = "github"


def _signed(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.encode())


def _pull_request(payload: dict[str, Any]) -> str:
    pr = field(payload, "pull_request", dict)
    repository = field(payload, "repository.full_name", str)
    number = field(pr, "number", int)
    row = (
        PullRequest.objects.filter(platform=PLATFORM, repository=repository, number=number)
        .select_related("issue")
        .first()
    )
    if row is None:
        raise Ignored("a pull request the app does not hold")
    merged = bool(pr.get("merged"))
    status_ = "merged" if merged else "closed" if field(pr, "state") == "closed" else "open"
    observed = field(pr, "updated_at")
    item: dict[str, Any] = {
        "platform": PLATFORM,
        "repository": repository,
        "number": number,
        "issue_external_id": row.issue.external_id,
        "status": status_,
        "created_at": field(pr, "created_at"),
        "observed_at": observed,
    }
    for ours, theirs in (
        ("additions", "additions"),
        ("deletions", "deletions"),
        ("files_changed", "changed_files"),
    ):
        if isinstance(pr.get(theirs), int):
            item[ours] = pr[theirs]
    if merged:
        item["merged_at"] = field(pr, "merged_at")
    elif status_ == "closed":
        item["closed_at"] = field(pr, "closed_at")
    if payload.get("action") == "ready_for_review":
        item["ready_at"] = observed
    return apply_item("pull-requests", item)


def _by_bot(payload: dict[str, Any]) -> bool:
    """Whether a review is a bot's: its author (``review.user``, else the ``sender``) is
    of type ``Bot`` (a GitHub App or another bot account; people are ``User``)."""
    review = field(payload, "review", dict)
    author = review.get("user")
    if not isinstance(author, dict):
        author = payload.get("sender")
    return isinstance(author, dict) and author.get("type") == "Bot"


def _review(payload: dict[str, Any]) -> str:
    if payload.get("action") != "submitted":
        raise Ignored("a review that was not submitted")
    verdict = str(field(payload, "review.state")).lower()
    if _by_bot(payload):
        # Not a person's review: no round, no first review, no approval (docs/webhooks.md).
        raise Ignored("a review by a bot")
    return reviews.review_submitted(
        PLATFORM,
        field(payload, "repository.full_name", str),
        field(payload, "pull_request.number", int),
        moment(payload, "review.submitted_at"),
        verdict,
    )


# GitHub's deployment states; inactive (an older deployment superseded) changes nothing.
_DEPLOYMENT_STATUS = {
    "success": "succeeded",
    "failure": "failed",
    "error": "failed",
    "in_progress": "in_progress",
    "queued": "pending",
    "pending": "pending",
}


def _deployment_status(payload: dict[str, Any]) -> str:
    deployment = field(payload, "deployment", dict)
    github_state = field(payload, "deployment_status.state", str)
    ours = _DEPLOYMENT_STATUS.get(github_state)
    if ours is None:
        raise Ignored(f"a deployment status {github_state!r}")
    at = field(payload, "deployment_status.created_at")
    item = {
        "platform": PLATFORM,
        "repository": field(payload, "repository.full_name"),
        "external_id": str(field(deployment, "id")),
        "environment": field(deployment, "environment"),
        "status": ours,
        "commit_sha": str(deployment.get("sha") or ""),
        "started_at": field(deployment, "created_at"),
        "observed_at": at,
    }
    if ours in ("succeeded", "failed"):
        item["finished_at"] = at
    return apply_item("deployments", item)


def _issue(payload: dict[str, Any]) -> str:
    issue = field(payload, "issue", dict)
    severity = incident_severity(label_names(issue.get("labels"), "name"))
    closed = field(issue, "state") == "closed"
    item = {
        "platform": PLATFORM,
        "repository": field(payload, "repository.full_name"),
        "external_id": str(field(issue, "number")),
        "severity": severity,
        "status": "resolved" if closed else "open",
        "opened_at": field(issue, "created_at"),
        "observed_at": field(issue, "updated_at"),
    }
    if closed:
        item["resolved_at"] = field(issue, "closed_at")
    return apply_item("incidents", item)


HANDLERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "pull_request": _pull_request,
    "pull_request_review": _review,
    "deployment_status": _deployment_status,
    "issues": _issue,
}


class GitHubWebhookView(WebhookView):
    """POST a GitHub webhook delivery (signed); see docs/webhooks.md."""

    platform = PLATFORM
    event_header = "HTTP_X_GITHUB_EVENT"
    delivery_headers = ("HTTP_X_GITHUB_DELIVERY",)
    delivery_label = "X-GitHub-Delivery"
    handlers = HANDLERS

    refusal = "X-Hub-Signature-256 is missing or does not match the body."

    def authentic(self, request: Request, secret: Secret) -> bool:
        signature = request.META.get("HTTP_X_HUB_SIGNATURE_256", "")
        return bool(signature and secret.value and _signed(secret.value, request.body, signature))

    @extend_schema(
        operation_id="webhook_github",
        summary="GitHub webhook",
        description=(
            "A GitHub webhook delivery, signed with X-Hub-Signature-256 (401 without a valid "
            "signature, 403 when no secret is configured). pull_request, "
            "pull_request_review, deployment_status and issues (the incident label) update "
            "rows; a redelivery (the same X-GitHub-Delivery) changes nothing; other events "
            "answer 202. 400 names the payload field at fault, 411 for a chunked body, 413 "
            "over WEBHOOK_MAX_BYTES, 415 unless JSON. See docs/webhooks.md."
        ),
        parameters=[
            OpenApiParameter("X-GitHub-Event", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-GitHub-Delivery", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-Hub-Signature-256", str, OpenApiParameter.HEADER, required=True),
        ],
        request=WEBHOOK_REQUEST,
        responses=WEBHOOK_RESPONSES,
    )
    def post(self, request: Request) -> Response:
        return super().post(request)
