"""Webhooks onto the same rows as the state API (docs/webhooks.md): what every platform's
endpoint does, whatever the platform. A platform (``github``, ``gitlab``) says how its
deliveries are authenticated, named and mapped to items.

The platform's check is the authentication, made before the body is parsed. A delivery id
is recorded in the transaction that applies the delivery, so a redelivery changes and
counts nothing. An event or object the app does not track is acknowledged (202) and
ignored. A delivery is answered with what it did to the rows (applied, unchanged, stale),
never "applied" when nothing was written; one that contradicts the rows is a conflict
(409), its id not kept. Every outcome is counted in
``tamma_metrics_webhook_deliveries_total``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from .. import selfmetrics, state
from ..conf import app_settings
from ..models import WebhookDelivery, WebhookSecret
from . import bodies
from .state import SERIALIZERS, ObservedTime

__all__ = [
    "BadPayload",
    "Conflict",
    "Ignored",
    "Secret",
    "WebhookView",
    "apply_item",
    "field",
    "incident_severity",
    "label_names",
    "label_severity",
    "moment",
    "secrets_of",
]

PRUNE_EVERY_SECONDS = 60.0
_last_prune = float("-inf")


class _RawBody(BaseParser):
    """Leaves the body alone: a signature is over its exact bytes."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None):
        return None


class Ignored(Exception):
    """A delivery about something the app does not track (202)."""


class BadPayload(Exception):
    """An authentic delivery whose body is not what the platform sends, or whose times
    contradict each other or the row's (400 naming the field)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.field = name


class Conflict(Exception):
    """A delivery that contradicts what the rows hold and counted (409): nothing written."""

    def __init__(self, errors: dict[str, list[str]], current: dict[str, Any] | None) -> None:
        super().__init__("conflict")
        self.errors = errors
        self.current = current


# The row's answer -> the delivery's outcome: "applied" only when a row changed.
_OUTCOMES = {"created": "applied", "updated": "applied", "unchanged": "unchanged", "stale": "stale"}


MAX_NUMBER = 2**31 - 1  # the database's integer columns
_KIND_NAMES = {str: "a string", int: "an integer", dict: "an object"}


def field(payload: Any, path: str, kind: type | None = None) -> Any:
    """``payload["a"]["b"]`` for ``path`` "a.b"; BadPayload naming it when missing, or
    when it is not of ``kind`` (values that are looked up or compared must be)."""
    value = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise BadPayload(path, f"{path} is missing.")
        value = value[part]
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise BadPayload(path, f"{path} must be {_KIND_NAMES[kind]}.")
    if kind is int and not 0 <= value <= MAX_NUMBER:  # numbers and ids are looked up
        raise BadPayload(path, f"{path} must be between 0 and {MAX_NUMBER}.")
    return value


def label_names(labels: Any, key: str) -> list[str]:
    """The names of a list of label objects (``[{key: name}, ...]``); anything else none."""
    if not isinstance(labels, list):
        return []
    return [
        label[key]
        for label in labels
        if isinstance(label, dict) and isinstance(label.get(key), str)
    ]


def incident_severity(names: list[str]) -> str:
    """The severity of an issue labelled as an incident (label_severity); Ignored for an
    issue without WEBHOOK_INCIDENT_LABEL."""
    if app_settings.WEBHOOK_INCIDENT_LABEL not in names:
        raise Ignored("an issue without the incident label")
    return label_severity(names)


def label_severity(names: list[str]) -> str:
    """The level of a ``severity:<level>`` label, or high."""
    return next((name.split(":", 1)[1] for name in names if name.startswith("severity:")), "high")


def moment(payload: Any, path: str) -> Any:
    """A time field, ISO 8601 or GitLab's ``2026-12-04 10:00:00 UTC``, as an aware datetime
    within the state API's bounds (from 2000, not ahead of the clock past the skew); a
    date that does not exist (2026-02-30) is a BadPayload naming it, like any other."""
    value = field(payload, path)
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.endswith(" UTC"):
        text = text[: -len(" UTC")].replace(" ", "T") + "+00:00"
    try:
        return ObservedTime().run_validation(text)
    except serializers.ValidationError as invalid:
        raise BadPayload(path, f"{path}: {_first(invalid.detail)}") from None


def _first(detail: Any) -> str:
    while isinstance(detail, list | dict):
        detail = next(iter(detail.values() if isinstance(detail, dict) else detail), "")
    return str(detail)


def apply_item(kind: str, item: dict[str, Any], paths: dict[str, str] | None = None) -> str:
    """Validate ``item`` as the state API does and write it; the row's answer (created,
    updated, unchanged or stale). BadPayload for an item the state API would reject (its
    field named by ``paths``, the item's field -> the payload's, where one is given),
    Conflict for one it answers conflict, Ignored when a row it names does not exist."""
    paths = paths or {}
    serializer = SERIALIZERS[kind](data=item)
    if not serializer.is_valid():
        name, errors = next(iter(serializer.errors.items()))
        shown = paths.get(name, name)
        raise BadPayload(shown, f"{shown}: {_first(errors)}")
    outcome = state.apply(kind, [dict(serializer.validated_data)])[0]
    if outcome.status == "rejected" and outcome.errors:
        name, errors = next(iter(outcome.errors.items()))
        shown = paths.get(name, name)
        raise BadPayload(shown, f"{shown}: {_first(errors)}")
    if outcome.status == "conflict":
        raise Conflict(outcome.errors or {}, outcome.current)
    if outcome.status == "not_found":
        raise Ignored(f"a {kind} item naming a row the app does not hold")
    return outcome.status


def _prune() -> None:
    """Forget delivery ids older than WEBHOOK_DEDUP_SECONDS, at most once a minute."""
    global _last_prune
    now = time.monotonic()
    if now - _last_prune >= PRUNE_EVERY_SECONDS:
        _last_prune = now
        cutoff = timezone.now() - timedelta(seconds=app_settings.WEBHOOK_DEDUP_SECONDS)
        WebhookDelivery.objects.filter(received_at__lt=cutoff).delete()


@dataclass(frozen=True)
class Secret:
    """A webhook secret: its value where it is kept (GitHub's), and its SHA-256 digest."""

    value: str
    digest: str
    row: int | None = None  # the admin's WebhookSecret, if it is one


def secrets_of(platform: str) -> list[Secret]:
    """The platform's secrets: the one in settings and those kept in the admin."""
    found = []
    configured = (app_settings.WEBHOOK_SECRETS or {}).get(platform)
    if configured:
        found.append(Secret(configured, WebhookSecret.digest_of(configured)))
    for row in WebhookSecret.objects.filter(platform=platform).only("pk", "secret", "digest"):
        found.append(Secret(row.secret, row.digest, row.pk))
    return found


def _error(code: int, detail: Any) -> Response:
    return Response(detail if isinstance(detail, dict) else {"detail": detail}, status=code)


class WebhookView(bodies.DatabaseAwareView):
    """One platform's webhook endpoint; subclasses say how its deliveries look."""

    authentication_classes = []
    permission_classes = [AllowAny]  # the platform's check runs first, in post()
    parser_classes = [_RawBody]

    platform: ClassVar[str] = ""
    # The header naming the event, and those carrying the delivery id (first found).
    event_header: ClassVar[str] = ""
    delivery_headers: ClassVar[tuple[str, ...]] = ()
    delivery_label: ClassVar[str] = ""  # the first header's name, for the 400
    handlers: ClassVar[dict[str, Callable[[dict[str, Any]], str]]] = {}

    # Why a delivery that matches no secret is refused (401).
    refusal: ClassVar[str] = ""

    def authentic(self, request: Request, secret: Secret) -> bool:
        """Whether the delivery was sent with ``secret`` (compared in constant time)."""
        raise NotImplementedError

    def event_of(self, request: Request, payload: dict[str, Any]) -> str:
        return request.META.get(self.event_header, "")

    def post(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            selfmetrics.count_webhook(self.platform, "rejected")
            return refused
        delivery = self._delivery(request)
        try:
            # The same limits as the state API's bodies: depth, NaN, size of numbers, Unicode.
            payload = bodies.strict_json(request.body)
        except ParseError as bad:
            return self._answer(400, "rejected", {"detail": str(bad.detail)})
        if not isinstance(payload, dict):
            return self._answer(400, "rejected", {"detail": "The body is not a JSON object."})
        event = self.event_of(request, payload)
        handler = self.handlers.get(event)
        _prune()
        try:
            with transaction.atomic():
                try:
                    with transaction.atomic():
                        record = WebhookDelivery.objects.create(
                            platform=self.platform, delivery_id=delivery, event=event[:64]
                        )
                except IntegrityError:
                    return self._answer(200, "duplicate", {"outcome": "duplicate"})
                if handler is None:
                    raise Ignored(f"the event {event!r}")
                result = handler(payload)
                record.outcome = _OUTCOMES.get(result, "applied")
                record.save(update_fields=["outcome"])
        except Ignored as why:
            self._remember(delivery, event)
            detail = {"outcome": "ignored", "detail": f"Ignored: {why}."}
            return self._answer(202, "ignored", detail)
        except BadPayload as bad:
            return self._answer(400, "rejected", {bad.field: [str(bad)]})
        except Conflict as conflict:
            # Its id is not kept: once the rows change (a newer observation), the same
            # delivery may apply.
            body = {"outcome": "conflict", "errors": conflict.errors}
            if conflict.current:
                body["current"] = conflict.current
            return self._answer(409, "conflict", body)
        return self._answer(200, record.outcome, {"outcome": record.outcome, "result": result})

    def _delivery(self, request: Request) -> str:
        for header in self.delivery_headers:
            if value := request.META.get(header, ""):
                return value
        return ""

    def _refused(self, request: Request) -> Response | None:
        secrets = secrets_of(self.platform)
        if not secrets:
            return _error(
                status.HTTP_403_FORBIDDEN,
                f"Webhooks from {self.platform} are off: add a webhook secret in the admin "
                f"or set WEBHOOK_SECRETS['{self.platform}'].",
            )
        framed = bodies.framing(request, int(app_settings.WEBHOOK_MAX_BYTES))
        if framed is not None:
            return framed
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                "Send the webhook as application/json (the webhook's content type).",
            )
        # Every secret is tried, so that the time taken does not say which one matched.
        matched = [secret for secret in secrets if self.authentic(request, secret)]
        if not matched:
            return _error(status.HTTP_401_UNAUTHORIZED, self.refusal)
        used = [secret.row for secret in matched if secret.row is not None]
        if used:
            WebhookSecret.objects.filter(pk__in=used).update(last_used_at=timezone.now())
        delivery = self._delivery(request)
        if not delivery or len(delivery) > 128:
            return _error(
                status.HTTP_400_BAD_REQUEST,
                {
                    self.delivery_label: [
                        "The delivery id is missing or longer than 128 characters."
                    ]
                },
            )
        return None

    def _remember(self, delivery: str, event: str) -> None:
        """An ignored delivery is remembered too (its redelivery is a duplicate)."""
        with contextlib.suppress(IntegrityError):
            WebhookDelivery.objects.create(
                platform=self.platform, delivery_id=delivery, event=event[:64], outcome="ignored"
            )

    def _answer(self, code: int, outcome: str, body: dict[str, Any]) -> Response:
        selfmetrics.count_webhook(self.platform, outcome)
        return Response(body, status=code)
