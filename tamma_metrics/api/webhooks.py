"""GitHub's webhooks onto the same rows as the state API (docs/webhooks.md).

``POST /api/v1/webhooks/github``: the signature is the authentication. GitHub signs the
raw body with the webhook's secret (``X-Hub-Signature-256: sha256=<HMAC-SHA256>``); the
app computes the HMAC over the bytes it received, never over a re-serialised body, and
compares in constant time. A delivery id (``X-GitHub-Delivery``) is recorded in the
transaction that applies it, so a redelivery changes and counts nothing.

Events: ``pull_request`` updates a pull request the app already holds (Tamma's, written
through the state API; others are ignored: the app cannot tell which issue they belong
to), ``pull_request_review`` its timeline, ``deployment_status`` a deployment, ``issues``
with the incident label an incident; ``ping`` and anything else is acknowledged (202) and
ignored. Every outcome is counted in ``tamma_metrics_webhook_deliveries_total``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from .. import selfmetrics, state
from ..conf import app_settings
from ..models import PullRequest, WebhookDelivery
from ..state import reviews
from . import bodies
from .state import SERIALIZERS

__all__ = ["GitHubWebhookView"]

logger = logging.getLogger(__name__)
PLATFORM = "github"


class _RawBody(BaseParser):
    """Leaves the body alone: the signature is over its exact bytes."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None):
        return None


class Ignored(Exception):
    """A delivery about something the app does not track (202)."""


class BadPayload(Exception):
    """A signed delivery whose body is not what GitHub sends (400 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _signed(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.encode())


def _get(payload: Any, path: str) -> Any:
    """``payload["a"]["b"]`` for ``path`` "a.b"; BadPayload naming it when missing."""
    value = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise BadPayload(path, f"{path} is missing.")
        value = value[part]
    return value


def _time(payload: Any, path: str) -> Any:
    value = _get(payload, path)
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None:
        raise BadPayload(path, f"{path} is not an ISO 8601 time.")
    return moment


def _apply(kind: str, item: dict[str, Any]) -> str:
    """Validate ``item`` as the state API does and write it; the item's outcome."""
    serializer = SERIALIZERS[kind](data=item)
    if not serializer.is_valid():
        field, errors = next(iter(serializer.errors.items()))
        raise BadPayload(field, f"{field}: {errors[0] if isinstance(errors, list) else errors}")
    return state.apply(kind, [dict(serializer.validated_data)])[0].status


def _pull_request(payload: dict[str, Any]) -> str:
    pr = _get(payload, "pull_request")
    repository = _get(payload, "repository.full_name")
    number = _get(pr, "number")
    row = (
        PullRequest.objects.filter(platform=PLATFORM, repository=repository, number=number)
        .select_related("issue")
        .first()
    )
    if row is None:
        raise Ignored("a pull request the app does not hold")
    merged = bool(pr.get("merged"))
    status_ = "merged" if merged else "closed" if _get(pr, "state") == "closed" else "open"
    observed = _get(pr, "updated_at")
    item: dict[str, Any] = {
        "platform": PLATFORM,
        "repository": repository,
        "number": number,
        "issue_external_id": row.issue.external_id,
        "status": status_,
        "created_at": _get(pr, "created_at"),
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
        item["merged_at"] = _get(pr, "merged_at")
    elif status_ == "closed":
        item["closed_at"] = _get(pr, "closed_at")
    if payload.get("action") == "ready_for_review":
        item["ready_at"] = observed
    return _apply("pull-requests", item)


def _review(payload: dict[str, Any]) -> str:
    if payload.get("action") != "submitted":
        raise Ignored("a review that was not submitted")
    verdict = str(_get(payload, "review.state")).lower()
    return reviews.review_submitted(
        PLATFORM,
        _get(payload, "repository.full_name"),
        _get(payload, "pull_request.number"),
        _time(payload, "review.submitted_at"),
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
    deployment = _get(payload, "deployment")
    github_state = _get(payload, "deployment_status.state")
    ours = _DEPLOYMENT_STATUS.get(github_state)
    if ours is None:
        raise Ignored(f"a deployment status {github_state!r}")
    at = _get(payload, "deployment_status.created_at")
    item = {
        "platform": PLATFORM,
        "repository": _get(payload, "repository.full_name"),
        "external_id": str(_get(deployment, "id")),
        "environment": _get(deployment, "environment"),
        "status": ours,
        "commit_sha": str(deployment.get("sha") or ""),
        "started_at": _get(deployment, "created_at"),
        "observed_at": at,
    }
    if ours in ("succeeded", "failed"):
        item["finished_at"] = at
    return _apply("deployments", item)


def _issue(payload: dict[str, Any]) -> str:
    issue = _get(payload, "issue")
    names = [
        label.get("name", "") for label in issue.get("labels") or [] if isinstance(label, dict)
    ]
    if app_settings.WEBHOOK_INCIDENT_LABEL not in names:
        raise Ignored("an issue without the incident label")
    severity = next(
        (name.split(":", 1)[1] for name in names if name.startswith("severity:")), "high"
    )
    closed = _get(issue, "state") == "closed"
    item = {
        "platform": PLATFORM,
        "repository": _get(payload, "repository.full_name"),
        "external_id": str(_get(issue, "number")),
        "severity": severity,
        "status": "resolved" if closed else "open",
        "opened_at": _get(issue, "created_at"),
        "observed_at": _get(issue, "updated_at"),
    }
    if closed:
        item["resolved_at"] = _get(issue, "closed_at")
    return _apply("incidents", item)


HANDLERS = {
    "pull_request": _pull_request,
    "pull_request_review": _review,
    "deployment_status": _deployment_status,
    "issues": _issue,
}


_last_prune = float("-inf")
PRUNE_EVERY_SECONDS = 60.0


def _prune() -> None:
    """Forget delivery ids older than WEBHOOK_DEDUP_SECONDS, at most once a minute."""
    global _last_prune
    now = time.monotonic()
    if now - _last_prune >= PRUNE_EVERY_SECONDS:
        _last_prune = now
        cutoff = timezone.now() - timedelta(seconds=app_settings.WEBHOOK_DEDUP_SECONDS)
        WebhookDelivery.objects.filter(received_at__lt=cutoff).delete()


class GitHubWebhookView(bodies.DatabaseAwareView):
    """POST a GitHub webhook delivery (signed); see docs/webhooks.md."""

    authentication_classes: list = []
    permission_classes = [AllowAny]  # the signature is checked below, before anything
    parser_classes = [_RawBody]

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
        request=OpenApiTypes.OBJECT,
        responses=dict.fromkeys((200, 202, 400, 401, 403, 411, 413, 415), OpenApiTypes.OBJECT),
    )
    def post(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            selfmetrics.count_webhook(PLATFORM, "rejected")
            return refused
        body = request.body
        event = request.META.get("HTTP_X_GITHUB_EVENT", "")
        delivery = request.META.get("HTTP_X_GITHUB_DELIVERY", "")
        try:
            payload = json.loads(body)
        except ValueError:
            return self._answer(400, "rejected", {"detail": "The body is not JSON."})
        if not isinstance(payload, dict):
            return self._answer(400, "rejected", {"detail": "The body is not a JSON object."})
        handler = HANDLERS.get(event)
        _prune()
        try:
            with transaction.atomic():
                try:
                    with transaction.atomic():
                        record = WebhookDelivery.objects.create(
                            platform=PLATFORM, delivery_id=delivery, event=event[:64]
                        )
                except IntegrityError:
                    return self._answer(200, "duplicate", {"outcome": "duplicate"})
                if handler is None:
                    raise Ignored(f"the event {event!r}")
                result = handler(payload)
                record.outcome = "ignored" if result == "ignored" else "applied"
                record.save(update_fields=["outcome"])
        except Ignored as why:
            self._remember(delivery, event)
            detail = {"outcome": "ignored", "detail": f"Ignored: {why}."}
            return self._answer(202, "ignored", detail)
        except BadPayload as bad:
            return self._answer(400, "rejected", {bad.field: [str(bad)]})
        return self._answer(200, record.outcome, {"outcome": record.outcome, "result": result})

    def _refused(self, request: Request) -> Response | None:
        secret = (app_settings.WEBHOOK_SECRETS or {}).get(PLATFORM)
        if not secret:
            return Response(
                {"detail": "Webhooks from github are off: set WEBHOOK_SECRETS['github']."},
                status=status.HTTP_403_FORBIDDEN,
            )
        framed = bodies.framing(request, int(app_settings.WEBHOOK_MAX_BYTES))
        if framed is not None:
            return framed
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return Response(
                {"detail": "Send the webhook as application/json (the webhook's content type)."},
                status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        signature = request.META.get("HTTP_X_HUB_SIGNATURE_256", "")
        if not signature or not _signed(secret, request.body, signature):
            return Response(
                {"detail": "X-Hub-Signature-256 is missing or does not match the body."},
                status=status.HTTP_401_UNAUTHORIZED,
            )
        delivery = request.META.get("HTTP_X_GITHUB_DELIVERY", "")
        if not delivery or len(delivery) > 128:
            return Response(
                {"X-GitHub-Delivery": ["The delivery id is missing or longer than 128."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return None

    def _remember(self, delivery: str, event: str) -> None:
        """An ignored delivery is remembered too (its redelivery is a duplicate)."""
        with contextlib.suppress(IntegrityError):
            WebhookDelivery.objects.create(
                platform=PLATFORM, delivery_id=delivery, event=event[:64], outcome="ignored"
            )

    def _answer(self, code: int, outcome: str, body: dict[str, Any]) -> Response:
        selfmetrics.count_webhook(PLATFORM, outcome)
        return Response(body, status=code)
