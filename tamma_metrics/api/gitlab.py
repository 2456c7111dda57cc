"""GitLab's webhooks (docs/webhooks.md): ``POST /api/v1/webhooks/gitlab``.

GitLab sends the webhook's secret token as ``X-Gitlab-Token``; it is compared in
constant time (as digests, so its length is not given away). Deliveries are named by
``Idempotency-Key`` (the same across GitLab's retries) or else ``X-Gitlab-Event-UUID``.
Events, by the body's ``object_kind``: ``merge_request`` updates a merge request the app
already holds (its approvals too: a person's, not a bot's or the author's), ``deployment``
a deployment (with its environment's tier and the full commit sha), ``issue`` and
``work_item`` of type incident, or with the incident label, an incident (with GitLab's
severity).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from .. import catalogue
from ..conf import app_settings
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
    label_names,
    label_severity,
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


def _by_author(payload: dict[str, Any], attributes: dict[str, Any]) -> bool:
    """Whether the approver opened the merge request."""
    user = payload.get("user")
    approver = user.get("id") if isinstance(user, dict) else None
    return approver is not None and approver == attributes.get("author_id")


# GitLab sends "approval" for each approval that leaves some still required (Premium and
# Ultimate) and "approved" for the one that completes them (every tier): each is one
# person's approval. "unapproval"/"unapproved" take one back: the review happened, and the
# first approval's time stays what it was (docs/webhooks.md).
_APPROVALS = frozenset({"approval", "approved"})
_UNAPPROVALS = frozenset({"unapproval", "unapproved"})


def _approval(payload: dict[str, Any], attributes: dict[str, Any], repository: str) -> str:
    if _by_bot(payload):
        raise Ignored("an approval by a bot")
    if _by_author(payload, attributes):
        raise Ignored("an approval by the merge request's author")
    user = payload.get("user")
    approver = user.get("id") if isinstance(user, dict) else None
    if not isinstance(approver, int) or isinstance(approver, bool):
        raise BadPayload("user.id", "user.id must be an integer.")
    at = moment(payload, "object_attributes.updated_at")
    try:
        # GitLab gives an approval no id of its own: the approver and the time name it, so
        # "approval" and "approved" for one click, or a redelivery, count once.
        return reviews.review_submitted(
            PLATFORM,
            repository,
            field(attributes, "iid", int),
            at,
            reviews.APPROVED,
            f"approval:{approver}:{at.isoformat()}",
        )
    except reviews.Skipped as skipped:
        raise Ignored(str(skipped)) from None
    except reviews.Backwards as backwards:
        raise BadPayload(
            "object_attributes.updated_at", f"object_attributes.updated_at: {backwards}"
        ) from None


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
    action = attributes.get("action")
    action = action if isinstance(action, str) else ""
    if action in _APPROVALS:
        return _approval(payload, attributes, repository)
    if action in _UNAPPROVALS:
        raise Ignored("an approval taken back (the review happened; docs/webhooks.md)")
    observed = _iso(payload, "object_attributes.updated_at")
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
        "created_at": _iso(payload, "object_attributes.created_at"),
        "observed_at": observed,
    }
    if status_ == "merged":
        merged = "merged_at" if "merged_at" in attributes else "updated_at"
        item["merged_at"] = _iso(payload, f"object_attributes.{merged}")
        # GitLab's payload says whether it was squashed, not whether the rest was a merge
        # commit or a fast-forward: anything else stays unknown.
        if attributes.get("squash") is True:
            item["merge_strategy"] = "squash"
    elif status_ == "closed":
        closed = "closed_at" if attributes.get("closed_at") else "updated_at"
        item["closed_at"] = _iso(payload, f"object_attributes.{closed}")
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
        "external_id": str(field(payload, "deployment_id", int)),
        "environment": field(payload, "environment"),
        "status": ours,
        "observed_at": at,
    }
    sha = _full_sha(payload)
    if sha:
        item["commit_sha"] = sha
    tier = payload.get("environment_tier")
    if tier in Deployment.Tier.values:
        item["tier"] = tier
    if ours == "in_progress":
        item["started_at"] = at
    if ours in ("succeeded", "failed"):
        item["finished_at"] = at
    return apply_item(
        "deployments",
        item,
        {
            "started_at": "status_changed_at",
            "finished_at": "status_changed_at",
            "observed_at": "status_changed_at",
        },
    )


_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _full_sha(payload: dict[str, Any]) -> str:
    """The deployed commit's full sha: the last part of ``commit_url`` when it is one and
    begins with ``short_sha`` (the payload has no field of its own for it); else the
    short sha, else none."""
    short = payload.get("short_sha")
    short = short if isinstance(short, str) else ""
    url = payload.get("commit_url")
    if isinstance(url, str):
        last = url.rstrip("/").rsplit("/", 1)[-1]
        if _SHA.fullmatch(last) and last.startswith(short):
            return last
    return short


def _is_incident(attributes: dict[str, Any], names: list[str]) -> bool:
    """An incident by GitLab's type (``type``: "Incident"; older payloads ``issue_type``)
    or by WEBHOOK_INCIDENT_LABEL."""
    kinds = (attributes.get("type"), attributes.get("issue_type"))
    by_type = any(isinstance(kind, str) and kind.lower() == "incident" for kind in kinds)
    return by_type or app_settings.WEBHOOK_INCIDENT_LABEL in names


def _severity(attributes: dict[str, Any], names: list[str]) -> str:
    """GitLab's own severity when it is one of ours, else a ``severity:<level>`` label,
    else high (GitLab's "unknown" says nothing)."""
    given = attributes.get("severity")
    if isinstance(given, str) and given.lower() in catalogue.VOCABULARIES["severity"]:
        return given.lower()
    return label_severity(names)


def _issue(payload: dict[str, Any]) -> str:
    attributes = field(payload, "object_attributes", dict)
    names = label_names(payload.get("labels") or attributes.get("labels"), "title")
    if not _is_incident(attributes, names):
        raise Ignored("an issue that is not an incident (its type, or the incident label)")
    closed = field(attributes, "state") == "closed"
    item = {
        "platform": PLATFORM,
        "repository": field(payload, "project.path_with_namespace"),
        "external_id": str(field(attributes, "iid", int)),
        "severity": _severity(attributes, names),
        "status": "resolved" if closed else "open",
        "opened_at": _iso(payload, "object_attributes.created_at"),
        "observed_at": _iso(payload, "object_attributes.updated_at"),
    }
    if closed:
        item["resolved_at"] = _iso(payload, "object_attributes.closed_at")
    return apply_item("incidents", item)


# Work items (GitLab 17+: issues, tasks, incidents...) send the issue's payload shape.
_HANDLERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "merge_request": _merge_request,
    "deployment": _deployment,
    "issue": _issue,
    "work_item": _issue,
}


class GitLabWebhookView(WebhookView):
    """POST a GitLab webhook delivery (its secret token); see docs/webhooks.md."""

    platform = PLATFORM
    event_header = "HTTP_X_GITLAB_EVENT"
    delivery_headers = ("HTTP_IDEMPOTENCY_KEY", "HTTP_X_GITLAB_EVENT_UUID")
    delivery_label = "Idempotency-Key"
    handlers = _HANDLERS

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
