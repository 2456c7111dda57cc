"""GitLab's webhooks (docs/webhooks.md): ``POST /api/v1/webhooks/gitlab``.

GitLab sends the webhook's secret token as ``X-Gitlab-Token``; it is compared in
constant time (as digests, so its length is not given away). Deliveries are named by
``Idempotency-Key`` (the same across GitLab's retries) or else ``X-Gitlab-Event-UUID``.
Events, by the body's ``object_kind``: ``merge_request`` updates a merge request the app
already holds (its approvals too: a person's; a bot's is ignored), ``deployment`` a
deployment, ``issue`` with the incident label an incident.
"""

from __future__ import annotations

import hashlib
import hmac
import re
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

__all__ = ["GitLabWebhookView"]

PLATFORM = "gitlab"
_MR_STATUS = {"opened": "open", "merged": "merged", "closed": "closed", "locked": "open"}
# GitLab's deployment statuses; canceled changes nothing.
_DEPLOYMENT_STATUS = {
    "created": "pending",
    "running": "in_progress",
    "success": "succeeded",
    "failed": "failed",
}


# The usernames GitLab gives its bot users: those of project and group access tokens
# (project_<id>_bot_<random>; older GitLab: project_<id>_bot, project_<id>_bot<n>) and
# service accounts made without a username (service_account_<...>), from GitLab's docs.
_BOT_USERNAME = re.compile(r"(?:(?:project|group)_\d+_bot(?:_\w+|\d*)|service_account_\w+)")


def _by_bot(payload: dict[str, Any]) -> bool:
    """Whether the event's ``user`` (who approved) is a bot: ``bot: true`` where the
    payload carries it, else a bot user's username (webhook payloads document no flag)."""
    user = payload.get("user")
    if not isinstance(user, dict):
        return False
    username = user.get("username")
    return user.get("bot") is True or (
        isinstance(username, str) and _BOT_USERNAME.fullmatch(username) is not None
    )


def _iso(payload: Any, path: str) -> str:
    return moment(payload, path).isoformat()


def _merge_request(payload: dict[str, Any]) -> str:
    attributes = field(payload, "object_attributes", dict)
    repository = field(payload, "project.path_with_namespace", str)
    number = field(attributes, "iid", int)
    row = (
        PullRequest.objects.filter(platform=PLATFORM, repository=repository, number=number)
        .select_related("issue")
        .first()
    )
    if row is None:
        raise Ignored("a merge request the app does not hold")
    observed = _iso(attributes, "updated_at")
    if attributes.get("action") == "approved":
        if _by_bot(payload):
            # Not a person's approval: no round, no first review (docs/webhooks.md).
            raise Ignored("an approval by a bot")
        return reviews.review_submitted(
            PLATFORM, repository, number, moment(attributes, "updated_at"), reviews.APPROVED
        )
    gitlab_state = field(attributes, "state", str)
    status_ = _MR_STATUS.get(gitlab_state)
    if status_ is None:
        raise Ignored(f"a merge request state {gitlab_state!r}")
    item: dict[str, Any] = {
        "platform": PLATFORM,
        "repository": repository,
        "number": number,
        "issue_external_id": row.issue.external_id,
        "status": status_,
        "created_at": _iso(attributes, "created_at"),
        "observed_at": observed,
    }
    if status_ == "merged":
        item["merged_at"] = _iso(
            attributes, "merged_at" if "merged_at" in attributes else "updated_at"
        )
    elif status_ == "closed":
        item["closed_at"] = _iso(
            attributes, "closed_at" if attributes.get("closed_at") else "updated_at"
        )
    changes = payload.get("changes")
    draft = changes.get("draft") if isinstance(changes, dict) else None
    if isinstance(draft, dict) and draft.get("previous") is True and draft.get("current") is False:
        item["ready_at"] = observed
    return apply_item("pull-requests", item)


def _deployment(payload: dict[str, Any]) -> str:
    gitlab_status = field(payload, "status", str)
    ours = _DEPLOYMENT_STATUS.get(gitlab_status)
    if ours is None:
        raise Ignored(f"a deployment status {gitlab_status!r}")
    at = _iso(payload, "status_changed_at")
    item = {
        "platform": PLATFORM,
        "repository": field(payload, "project.path_with_namespace"),
        "external_id": str(field(payload, "deployment_id")),
        "environment": field(payload, "environment"),
        "status": ours,
        "commit_sha": str(payload.get("short_sha") or ""),
        "observed_at": at,
    }
    if ours == "in_progress":
        item["started_at"] = at
    if ours in ("succeeded", "failed"):
        item["finished_at"] = at
    return apply_item("deployments", item)


def _issue(payload: dict[str, Any]) -> str:
    attributes = field(payload, "object_attributes", dict)
    severity = incident_severity(
        label_names(payload.get("labels") or attributes.get("labels"), "title")
    )
    closed = field(attributes, "state") == "closed"
    item = {
        "platform": PLATFORM,
        "repository": field(payload, "project.path_with_namespace"),
        "external_id": str(field(attributes, "iid")),
        "severity": severity,
        "status": "resolved" if closed else "open",
        "opened_at": _iso(attributes, "created_at"),
        "observed_at": _iso(attributes, "updated_at"),
    }
    if closed:
        item["resolved_at"] = _iso(attributes, "closed_at")
    return apply_item("incidents", item)


class GitLabWebhookView(WebhookView):
    """POST a GitLab webhook delivery (its secret token); see docs/webhooks.md."""

    platform = PLATFORM
    event_header = "HTTP_X_GITLAB_EVENT"
    delivery_headers = ("HTTP_IDEMPOTENCY_KEY", "HTTP_X_GITLAB_EVENT_UUID")
    delivery_label = "Idempotency-Key"
    handlers = {"merge_request": _merge_request, "deployment": _deployment, "issue": _issue}

    refusal = "X-Gitlab-Token is missing or wrong."

    def authentic(self, request: Request, secret: Secret) -> bool:
        # As digests: only the digest is kept, and the token's length is not given away.
        token = request.META.get("HTTP_X_GITLAB_TOKEN", "")
        given = hashlib.sha256(token.encode()).hexdigest()
        return bool(token) and hmac.compare_digest(given.encode(), secret.digest.encode())

    def event_of(self, request: Request, payload: dict[str, Any]) -> str:
        kind = payload.get("object_kind")
        return kind if isinstance(kind, str) else request.META.get(self.event_header, "")

    @extend_schema(
        operation_id="webhook_gitlab",
        summary="GitLab webhook",
        description=(
            "A GitLab webhook delivery with its secret token in X-Gitlab-Token (401 without "
            "the right one, 403 when none is configured). merge_request, deployment and "
            "issue (the incident label) update rows; a redelivery (the same Idempotency-Key "
            "or X-Gitlab-Event-UUID) changes nothing; other events answer 202. 400 names the "
            "payload field at fault, 411 for a chunked body, 413 over WEBHOOK_MAX_BYTES, 415 "
            "unless JSON. See docs/webhooks.md."
        ),
        parameters=[
            OpenApiParameter("X-Gitlab-Token", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-Gitlab-Event-UUID", str, OpenApiParameter.HEADER),
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER),
        ],
        request=WEBHOOK_REQUEST,
        responses=WEBHOOK_RESPONSES,
    )
    def post(self, request: Request) -> Response:
        return super().post(request)
