"""Ingest of events from Tamma's workers, and the family catalogue."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, cast

from django.db import connection, transaction
from django.utils import timezone
from django.utils.decorators import method_decorator
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from .. import access, budget, catalogue, record
from ..conf import app_settings
from ..models import IngestedEvent
from ..reports import delivery, health, velocity
from . import bodies, schema  # schema: the OpenAPI schema's shared parts and extensions
from . import serializers as wire
from .bodies import DatabaseAwareView, LenientJSONParser

logger = logging.getLogger(__name__)

_last_prune = 0.0
PRUNE_EVERY_SECONDS = 60


def _event_union(**kwargs: Any) -> PolymorphicProxySerializer:
    """The events as a union discriminated by ``type`` (for the OpenAPI schema)."""
    return PolymorphicProxySerializer(
        component_name="Event",
        serializers=dict(wire.EVENT_TYPES),
        resource_type_field_name="type",
        **kwargs,
    )


EVENT_UNION = _event_union()


class BatchSerializer(wire.StrictSerializer):
    events = _event_union(many=True, min_length=1)


def _prune() -> None:
    """Forget event ids older than the window, at most once a minute per process."""
    global _last_prune
    now = time.monotonic()
    if now - _last_prune >= PRUNE_EVERY_SECONDS:
        _last_prune = now
        cutoff = timezone.now() - timedelta(seconds=app_settings.INGEST_DEDUP_SECONDS)
        IngestedEvent.objects.filter(received_at__lt=cutoff).delete()


def _validated(index: int, raw: Any, validators: dict[str, Any]) -> tuple[dict, dict | None]:
    """One event's answer so far (``index``, its ``event_id``) and its validated fields,
    or the answer ``rejected`` with the fields at fault. One serializer per event type and
    request validates every event of that type: its fields are built once."""
    result: dict[str, Any] = {"index": index}
    if isinstance(raw, dict) and isinstance(raw.get("event_id"), str):
        result["event_id"] = raw["event_id"]
    serializer = wire.for_event(raw, validators)
    if isinstance(serializer, dict):
        return {**result, "status": "rejected", "errors": serializer}, None
    try:
        return result, serializer.run_validation(raw)
    except ValidationError as exc:
        return {**result, "status": "rejected", "errors": exc.detail}, None


def _claim(user: Any, events: list[tuple[str, str]]) -> set[str]:
    """Claim the event ids of a batch in one statement and one transaction; the ids this
    call claimed. An id held already, or claimed at the same moment by another request
    (PostgreSQL makes the second wait for the first's commit; SQLite has one writer at a
    time), is not returned: that event is a duplicate."""
    if not events:
        return set()
    table = connection.ops.quote_name(IngestedEvent._meta.db_table)
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(events))
    now = timezone.now()
    params = [value for event_id, kind in events for value in (user.pk, event_id, kind, now)]
    sql = (
        f"INSERT INTO {table} (user_id, event_id, event_type, received_at) VALUES {rows} "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def _count(result: dict, serializer: Any, fields: dict) -> dict:
    """Record one event (after its id's claim committed) and say what the policy did."""
    with record.reporting() as adjustments:
        serializer.record_validated(fields)
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


def _ingest(events: list[Any], user: Any) -> list[dict]:
    """Validate every event, claim the ids of the valid ones in one transaction, then count
    the claimed ones and those without an id; each event stands or falls alone."""
    validators: dict[str, Any] = {}
    checked = [_validated(index, raw, validators) for index, raw in enumerate(events)]
    wanted: dict[str, str] = {}  # event_id -> type, the first of the batch to carry it
    for _, fields in checked:
        if fields and fields.get("event_id"):
            wanted.setdefault(fields["event_id"], fields["type"])
    claimed = _claim(user, list(wanted.items()))
    if claimed:
        budget.answered()  # the database answered: new label values may be admitted
    # The ids are committed before counting: a crash in between loses those events rather
    # than counting a retry twice (docs/ingest.md).
    results = []
    for result, fields in checked:
        event_id = fields.get("event_id") if fields else None
        if fields is None:
            results.append(result)
        elif event_id and event_id not in claimed:
            results.append({**result, "status": "duplicate"})
        else:
            if event_id:  # a second copy in the same batch is a duplicate
                claimed.discard(event_id)
            results.append(_count(result, validators[fields["type"]], fields))
    return results


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
        responses={
            200: OpenApiResponse(
                wire.IngestResponseSerializer,
                "At least one event was counted or was a duplicate; each event is answered.",
            ),
            400: OpenApiResponse(
                schema.or_error(wire.IngestResponseSerializer, "IngestRejection"),
                "Every event was rejected (each answered, errors naming the fields), or the "
                'body as a whole is malformed ({"detail": ...}).',
            ),
            **schema.refusals(
                *schema.WRITE_REFUSALS,
                meaning={403: "Without the tamma_metrics.add_event permission."},
            ),
        },
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
        events = bodies.items(request, "events", app_settings.INGEST_MAX_BATCH)
        if isinstance(events, Response):
            return events
        _prune()
        results = _ingest(events, request.user)
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
        responses={200: wire.FamilySerializer(many=True), **schema.refusals(*schema.READ_REFUSALS)},
    )
    def get(self, request: Request) -> Response:
        try:
            # access.TokenAuthentication authenticates every caller here: auth is its Caller.
            visibility = access.visibility(cast(access.Caller, request.auth))
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
        return access.visible_families(cast(access.Caller, request.auth), names)


def _report_responses(report: type[serializers.Serializer], families: str) -> dict[int, Any]:
    return {
        200: report,
        400: OpenApiResponse(
            schema.FieldErrorsSerializer, "A parameter at fault (unknown, or a value not taken)."
        ),
        **schema.refusals(
            403, *schema.READ_REFUSALS, meaning={403: f"The caller may not see {families}."}
        ),
    }


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
        responses=_report_responses(schema.VelocitySerializer, "the business families"),
    )
    def get(self, request: Request) -> Response:
        if self.visible(request, velocity.FAMILIES) != set(velocity.FAMILIES):
            raise PermissionDenied("Velocity needs permission to see the business families.")
        try:
            filters = velocity.Filters.parse(request.query_params)
        except velocity.FilterError as error:
            return Response({error.field: [str(error)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(velocity.cached(filters))


class DeliveryView(_ReportView):
    """GET /api/v1/delivery: the four DORA keys with their bands, and the PR stages."""

    @extend_schema(
        operation_id="delivery",
        summary="Delivery performance",
        description=(
            "Deployment frequency, lead time for changes, change failure rate and failed "
            "deployment recovery time for the last `days` days (7, 30 or 90) and the days "
            "before them, each with its DORA band, and the pull-request stages. Needs "
            "permission to see the delivery families (403 otherwise); 400 names a "
            "parameter at fault. See docs/reports.md."
        ),
        parameters=[
            OpenApiParameter(
                "days", int, enum=list(delivery.WINDOWS), default=30, description="The window."
            )
        ],
        responses=_report_responses(schema.DeliverySerializer, "the delivery families"),
    )
    def get(self, request: Request) -> Response:
        if self.visible(request, delivery.FAMILIES) != set(delivery.FAMILIES):
            raise PermissionDenied("Delivery needs permission to see the delivery families.")
        try:
            days = delivery.parse(request.query_params)
        except velocity.FilterError as error:
            return Response({error.field: [str(error)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(delivery.cached(days))


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
        responses={
            200: schema.HealthSerializer,
            **schema.refusals(
                403, *schema.READ_REFUSALS, meaning={403: "The caller sees none of its families."}
            ),
        },
    )
    def get(self, request: Request) -> Response:
        visible = self.visible(request, set(health.SECTIONS.values()))
        if not visible:
            raise PermissionDenied("Health needs permission to see one of its families.")
        return Response(health.restricted(health.health(), visible))
