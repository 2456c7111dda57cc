"""GitHub's webhooks (docs/webhooks.md): ``POST /api/v1/webhooks/github``.

GitHub signs the raw body with the webhook's secret (``X-Hub-Signature-256:
sha256=<HMAC-SHA256>``); the HMAC is computed over the bytes received, never over a
re-serialised body, and compared in constant time. ``pull_request`` updates a pull
request the app already holds (Tamma's, written through the state API; others are
ignored: nothing in them says which issue they belong to), ``pull_request_review`` its
timeline (a person's review of someone else's pull request; a bot's or the author's is
ignored), ``deployment_status`` a deployment, ``issues`` with the incident label an
incident. GitHub's webhooks never say how a pull request was merged (squash, rebase or a
merge commit), so its merge strategy stays ``unknown``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from ..models import Deployment, PullRequest
from ..state import reviews
from .schema import WEBHOOK_REQUEST, WEBHOOK_RESPONSES
from .webhooks import (
    BadPayload,
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
    merged = pr.get("merged") is True
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
    return apply_item("pull-requests", item, _PR_PATHS)


_PR_PATHS = {
    name: f"pull_request.{theirs}"
    for name, theirs in (
        ("number", "number"),
        ("created_at", "created_at"),
        ("merged_at", "merged_at"),
        ("closed_at", "closed_at"),
        ("observed_at", "updated_at"),
        ("ready_at", "updated_at"),
        ("additions", "additions"),
        ("deletions", "deletions"),
        ("files_changed", "changed_files"),
    )
}


def _by_bot(payload: dict[str, Any]) -> bool:
    """Whether a review is a bot's: its author (``review.user``, else the ``sender``) is
    of type ``Bot`` (a GitHub App or another bot account; people are ``User``)."""
    review = field(payload, "review", dict)
    author = review.get("user")
    if not isinstance(author, dict):
        author = payload.get("sender")
    return isinstance(author, dict) and author.get("type") == "Bot"


def _by_author(payload: dict[str, Any]) -> bool:
    """Whether the review's author opened the pull request (a reply in their own thread)."""
    author, opener = payload["review"].get("user"), payload["pull_request"].get("user")
    if not isinstance(author, dict) or not isinstance(opener, dict):
        return False
    for key in ("id", "login"):
        if author.get(key) is not None and author.get(key) == opener.get(key):
            return True
    return False


# GitHub's review states (lower case in webhooks); dismissed changes nothing.
_VERDICTS = {
    "approved": reviews.APPROVED,
    "changes_requested": reviews.CHANGES_REQUESTED,
    "commented": reviews.COMMENTED,
}


def _review(payload: dict[str, Any]) -> str:
    if payload.get("action") != "submitted":
        raise Ignored("a review that was not submitted")
    field(payload, "pull_request", dict)
    state_ = field(payload, "review.state", str).lower()
    verdict = _VERDICTS.get(state_)
    if verdict is None:
        raise Ignored(f"a review in state {state_[:40]!r}")
    # Not a person's review of someone else's change: no round, no first review, no
    # approval (docs/webhooks.md).
    if _by_bot(payload):
        raise Ignored("a review by a bot")
    if _by_author(payload):
        raise Ignored("a review by the pull request's author")
    try:
        return reviews.review_submitted(
            PLATFORM,
            field(payload, "repository.full_name", str),
            field(payload, "pull_request.number", int),
            moment(payload, "review.submitted_at"),
            verdict,
            str(field(payload, "review.id", int)),
        )
    except reviews.Skipped as skipped:
        raise Ignored(str(skipped)) from None
    except reviews.Backwards as backwards:
        raise BadPayload("review.submitted_at", f"review.submitted_at: {backwards}") from None


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
        "external_id": str(field(deployment, "id", int)),
        "environment": field(deployment, "environment"),
        "status": ours,
        "started_at": field(deployment, "created_at"),
        "observed_at": at,
    }
    if isinstance(deployment.get("sha"), str):
        item["commit_sha"] = deployment["sha"]
    # GitHub marks an environment as production (production_environment); otherwise the
    # name decides (PRODUCTION_ENVIRONMENTS).
    if deployment.get("production_environment") is True:
        item["tier"] = Deployment.Tier.PRODUCTION
    if ours in ("succeeded", "failed"):
        item["finished_at"] = at
    return apply_item("deployments", item, _DEPLOYMENT_PATHS)


_DEPLOYMENT_PATHS = {
    "environment": "deployment.environment",
    "commit_sha": "deployment.sha",
    "started_at": "deployment.created_at",
    "finished_at": "deployment_status.created_at",
    "observed_at": "deployment_status.created_at",
}


def _issue(payload: dict[str, Any]) -> str:
    issue = field(payload, "issue", dict)
    severity = incident_severity(label_names(issue.get("labels"), "name"))
    closed = field(issue, "state") == "closed"
    item = {
        "platform": PLATFORM,
        "repository": field(payload, "repository.full_name"),
        "external_id": str(field(issue, "number", int)),
        "severity": severity,
        "status": "resolved" if closed else "open",
        "opened_at": field(issue, "created_at"),
        "observed_at": field(issue, "updated_at"),
    }
    if closed:
        item["resolved_at"] = field(issue, "closed_at")
    return apply_item(
        "incidents",
        item,
        {
            "opened_at": "issue.created_at",
            "resolved_at": "issue.closed_at",
            "observed_at": "issue.updated_at",
        },
    )


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
