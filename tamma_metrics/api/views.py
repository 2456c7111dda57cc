"""Ingest of events from Tamma's workers, and the family catalogue."""

from __future__ import annotations

import io
import logging
import time
from datetime import timedelta
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from django.utils.decorators import method_decorator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError, PermissionDenied
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import access, budget, catalogue, record
from ..conf import app_settings
from ..models import IngestedEvent
from ..reports import health, velocity
from . import schema as _schema  # noqa: F401  (registers the auth scheme)
from . import serializers as wire

logger = logging.getLogger(__name__)

_last_prune = 0.0
PRUNE_EVERY_SECONDS = 60


class LenientJSONParser(JSONParser):
    """Accept NaN and Infinity literals so the field at fault can be named (400), instead
    of failing the whole body; refuse nesting deeper than any event has (400) before
    parsing, so no body can drive the parser into a RecursionError (a 500)."""

    strict = False

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None):
        body = stream.read() if stream is not None else b""
        if _nesting(body) > MAX_JSON_DEPTH:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
        return super().parse(io.BytesIO(body), media_type, parser_context)


# A batch of events nests four deep ({"events": [{"tokens": {...}}]}); leave room.
MAX_JSON_DEPTH = 16
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _nesting(body: bytes) -> int:
    """How deep ``body``'s arrays and objects nest (counting stops past the limit).

    Brackets inside strings do not count: escaped backslashes and quotes are dropped,
    then every other piece between quotes is outside a string. All of it C-speed but
    the walk over the brackets, which stops as soon as the limit is passed."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    depth = deepest = 0
    for byte in outside.translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                break
    return deepest


class PayloadTooLarge(Exception):
    pass


def _event_union(**kwargs: Any) -> PolymorphicProxySerializer:
    """The events as a union discriminated by ``type`` (for the OpenAPI schema)."""
    return PolymorphicProxySerializer(
        component_name="Event",
        serializers=dict(wire.EVENT_TYPES),
        resource_type_field_name="type",
        **kwargs,
    )


EVENT_UNION = _event_union()


class BatchSerializer(serializers.Serializer):
    events = _event_union(many=True)


def _prune() -> None:
    """Forget event ids older than the window, at most once a minute per process."""
    global _last_prune
    now = time.monotonic()
    if now - _last_prune >= PRUNE_EVERY_SECONDS:
        _last_prune = now
        cutoff = timezone.now() - timedelta(seconds=app_settings.INGEST_DEDUP_SECONDS)
        IngestedEvent.objects.filter(received_at__lt=cutoff).delete()


def _events(request: Request) -> list[Any]:
    length = request.META.get("CONTENT_LENGTH") or "0"
    limit = app_settings.INGEST_MAX_BODY_BYTES
    if not length.isdigit() or int(length) > limit:
        raise PayloadTooLarge(f"The body exceeds {limit} bytes.")
    try:
        payload = request.data
    except RequestDataTooBig:
        raise PayloadTooLarge(f"The body exceeds {limit} bytes.") from None
    if isinstance(payload, dict) and "events" in payload:
        if set(payload) != {"events"} or not isinstance(payload["events"], list):
            raise ParseError('A batch is {"events": [ ... ]} and nothing else.')
        events = payload["events"]
        if not events:
            raise ParseError("The batch is empty.")
    elif isinstance(payload, dict):
        events = [payload]
    else:
        raise ParseError('Send one event object or {"events": [ ... ]}.')
    if len(events) > app_settings.INGEST_MAX_BATCH:
        raise PayloadTooLarge(f"At most {app_settings.INGEST_MAX_BATCH} events per request.")
    return events


def _ingest(index: int, raw: Any, user: Any) -> dict:
    """Validate, deduplicate and record one event; each event stands or falls alone."""
    serializer = wire.for_event(raw)
    result: dict[str, Any] = {"index": index}
    if isinstance(raw, dict) and isinstance(raw.get("event_id"), str):
        result["event_id"] = raw["event_id"]
    if isinstance(serializer, dict):
        return {**result, "status": "rejected", "errors": serializer}
    if not serializer.is_valid():
        return {**result, "status": "rejected", "errors": serializer.errors}
    event_id = serializer.validated_data.get("event_id")
    if event_id:
        try:
            with transaction.atomic():
                IngestedEvent.objects.create(
                    user=user, event_id=event_id, event_type=serializer.validated_data["type"]
                )
        except IntegrityError:
            # Seen before, by this process or another: acknowledged, not counted again.
            return {**result, "status": "duplicate"}
        budget.answered()  # its label values may be admitted at once
    # The id is committed before counting: a crash in between loses the event rather
    # than counting a retry twice.
    with record.reporting() as adjustments:
        serializer.record()
    result["status"] = "counted"
    folds = [
        {"family": a.family, "label": label, "recorded_as": value}
        for a in adjustments
        for label, value in a.folded.items()
    ]
    if folds:
        result["folded"] = folds
    overflow = sorted({a.family for a in adjustments if a.overflow})
    if overflow:
        result["overflow"] = overflow
    return result


class DatabaseAwareView(APIView):
    """An API view that answers 503 with Retry-After, in JSON, when the database fails
    (down, locked past its timeout), rather than a 500 page."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DatabaseError | access.Unavailable):
            logger.warning("tamma_metrics: API request failed, database unavailable: %s", exc)
            response = Response(
                {"detail": "The database is unavailable; try again shortly."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
            response["Retry-After"] = str(access.Unavailable.retry_after)
            return response
        return super().handle_exception(exc)


def _chunked(request: Request) -> bool:
    meta = request.META
    return "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and not meta.get(
        "CONTENT_LENGTH"
    )


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class EventsView(DatabaseAwareView):
    """POST /api/v1/events: one event, or a batch ``{"events": [...]}``."""

    authentication_classes = [access.TokenAuthentication]
    permission_classes = [IsAuthenticated, access.CanIngest]
    parser_classes = [LenientJSONParser]

    @extend_schema(
        operation_id="ingest_events",
        summary="Report events",
        description=(
            "Each event is counted once: a retry carrying the same `event_id` within the "
            "deduplication window is acknowledged as a duplicate. Events of a batch stand "
            "or fall alone. Label values outside a vocabulary are recorded as `other` and "
            "reported under `folded`. 200 when at least one event was counted or was a "
            "duplicate; 400 when every event was rejected; 411 for a chunked body (send "
            "a Content-Length); 413 for an over-size body or batch."
        ),
        request=PolymorphicProxySerializer(
            component_name="IngestRequest",
            serializers=[EVENT_UNION, BatchSerializer],
            resource_type_field_name=None,
        ),
        responses={200: wire.IngestResponseSerializer, 400: wire.IngestResponseSerializer},
        examples=[
            OpenApiExample(
                "AI request",
                request_only=True,
                value={
                    "type": "ai_request",
                    "event_id": "w1-000042",
                    "provider": "anthropic",
                    "model": "claude-sonnet",
                    "request_type": "chat",
                    "outcome": "success",
                    "duration_seconds": 12.5,
                    "tokens": {"input": 1200, "output": 300},
                    "cost_usd": 0.021,
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        if _chunked(request):
            # Django reads a body by its Content-Length: a chunked one would arrive empty.
            return Response(
                {
                    "detail": "Send the body with a Content-Length; chunked transfer "
                    "encoding is not supported."
                },  # fmt: skip
                status=status.HTTP_411_LENGTH_REQUIRED,
            )
        try:
            events = _events(request)
        except PayloadTooLarge as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        _prune()
        results = [_ingest(index, raw, request.user) for index, raw in enumerate(events)]
        counts = {
            state: sum(r["status"] == state for r in results)
            for state in ("counted", "duplicate", "rejected")
        }
        body = {
            "counted": counts["counted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": results,
        }
        ok = counts["counted"] or counts["duplicate"]
        return Response(body, status=status.HTTP_200_OK if ok else status.HTTP_400_BAD_REQUEST)


class FamiliesView(DatabaseAwareView):
    """GET /api/v1/families: the catalogue, and which families the caller may see."""

    authentication_classes = [access.TokenAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="list_families",
        summary="Metric families",
        responses={200: wire.FamilySerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        try:
            visibility = access.visibility(request.auth)
        except access.NoFamilies:
            visibility = catalogue.Visibility(frozenset(), False)
        rows = [
            {
                "name": f.name,
                "full_name": f.full_name,
                "type": f.kind.value,
                "help": f.help,
                "labels": list(f.labels),
                "buckets": list(f.buckets),
                "audience": f.audience.value,
                "source": f.source.value,
                "visible": visibility.allows_family(f.name),
            }
            for f in catalogue.families()
        ]
        return Response(rows)


class _ReportView(DatabaseAwareView):
    """A report for other tools (the Tamma CLI, a chat bot): the same figures as its page,
    for a caller allowed to see the families they reveal; throttled like the API."""

    authentication_classes = [access.TokenAuthentication]
    permission_classes = [IsAuthenticated]

    def visible(self, request: Request, names: Any) -> set[str]:
        return access.visible_families(request.auth, names)


def _filter_parameters() -> list[OpenApiParameter]:
    parameters = [
        OpenApiParameter(
            "days", int, enum=list(velocity.WINDOWS), default=30, description="The window."
        )
    ]
    for label in ("provider", "platform", "issue_type"):
        parameters.append(
            OpenApiParameter(
                label, str, enum=list(catalogue.VOCABULARIES[label]), description="Optional."
            )
        )
    return parameters


class VelocityView(_ReportView):
    """GET /api/v1/velocity: velocity and quality over a window of days."""

    @extend_schema(
        operation_id="velocity",
        summary="Velocity and quality",
        description=(
            "Issues completed per day and week, cycle and lead time, pull requests, "
            "first-time merges, autonomy, approval waits, escalations and providers, for "
            "the last `days` days (7, 30 or 90). Needs permission to see the business "
            "families behind them (403 otherwise); 400 names a parameter at fault."
        ),
        parameters=_filter_parameters(),
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        if self.visible(request, velocity.FAMILIES) != set(velocity.FAMILIES):
            raise PermissionDenied("Velocity needs permission to see the business families.")
        try:
            filters = velocity.Filters.parse(request.query_params)
        except velocity.FilterError as error:
            return Response({error.field: [str(error)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(velocity.cached(filters))


class HealthView(_ReportView):
    """GET /api/v1/health: the health page's figures and overall status."""

    @extend_schema(
        operation_id="health",
        summary="System health",
        description=(
            "Active loops, pending approvals, queue depth, recent escalations and the "
            "metrics layer's own state, each part only for a caller who may see its family, "
            "and an overall status (healthy, degraded or critical) with the rules that set "
            "it. 403 for a caller who sees none of its families."
        ),
        responses={200: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        visible = self.visible(request, set(health.SECTIONS.values()))
        if not visible:
            raise PermissionDenied("Health needs permission to see one of its families.")
        return Response(health.restricted(health.health(), visible))
