"""The OpenAPI schema's shared parts, in one place: how it describes our authentication
(bearer token or HTTP basic), the refusals every endpoint shares (DRF-style
``{"detail": ...}``), field errors, and the bodies of the reports (velocity, delivery,
health) and webhooks exactly as the views return them. ``tests/test_api_schemathesis.py``
checks every answer against these."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)
from drf_spectacular.plumbing import force_instance, is_list_serializer
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer
from rest_framework import serializers

from .serializers import StrictSerializer

__all__ = [
    "READ_REFUSALS",
    "WEBHOOK_REQUEST",
    "WEBHOOK_RESPONSES",
    "WRITE_REFUSALS",
    "DeliverySerializer",
    "ErrorSerializer",
    "FieldErrorsSerializer",
    "HealthSerializer",
    "VelocitySerializer",
    "or_error",
    "refusals",
]


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tamma_metrics.access.authentication.TokenAuthentication"
    name = ["tammaToken", "tammaBasic"]

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201 - library hook
        return [
            {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token: tmm_<prefix>_<secret>.",
            },
            {"type": "http", "scheme": "basic", "description": "A Django user."},
        ]


class StrictSerializerScheme(OpenApiSerializerExtension):
    """A StrictSerializer rejects fields it does not know: say so (additionalProperties),
    and that a batch holds at least one item (its list's min_length)."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):  # noqa: ANN001, ANN201 - library hook
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        for name, field in force_instance(self.target).fields.items():
            # ListSerializer keeps min_length (its stub declares only the argument).
            min_length = getattr(field, "min_length", None) if is_list_serializer(field) else None
            if min_length and name in schema["properties"]:
                schema["properties"][name]["minItems"] = min_length
        return schema


# -- errors ---------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """What DRF answers for a whole request it refuses, and what our views answer alike."""

    detail = serializers.CharField(help_text="What is wrong, in words.")


class FieldErrorsSerializer(serializers.Serializer):
    """``{"name": ["what is wrong", ...]}``: each parameter, header or field at fault."""


class FieldErrorsScheme(OpenApiSerializerExtension):
    target_class = FieldErrorsSerializer

    def map_serializer(self, auto_schema, direction):  # noqa: ANN001, ANN201 - library hook
        return {
            "type": "object",
            "description": "Each parameter, header or field at fault, with what is wrong.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "minProperties": 1,
        }


REFUSALS = {
    400: "The request as a whole is malformed.",
    401: "No credentials, or bad ones.",
    403: "The caller may not do this (a missing permission, a CSRF failure).",
    411: "A chunked body without a Content-Length.",
    413: "The body is over its size limit, or the batch over its item limit.",
    415: "The body is not application/json.",
    429: "Over the rate limit; Retry-After says when to try again.",
    503: "The database is unavailable; Retry-After says when to try again. Nothing written.",
}
# What any authenticated endpoint may answer before it looks at the request: a reading
# one (GET), and a writing one (a JSON body: its framing, size and media type).
READ_REFUSALS = (401, 429, 503)
WRITE_REFUSALS = (401, 403, 411, 413, 415, 429, 503)


def refusals(*codes: int, meaning: dict[int, str] | None = None) -> dict[int, OpenApiResponse]:
    """``{"detail": ...}`` answers for ``codes``; ``meaning`` says what a status means at
    this endpoint, where it says more than REFUSALS."""
    meaning = {**REFUSALS, **(meaning or {})}
    return {code: OpenApiResponse(ErrorSerializer, meaning[code]) for code in codes}


def or_error(serializer: Any, component_name: str) -> PolymorphicProxySerializer:
    """``serializer``'s body, or a whole-request ``{"detail": ...}`` (one of them)."""
    return PolymorphicProxySerializer(
        component_name=component_name,
        serializers=[serializer, ErrorSerializer],
        resource_type_field_name=None,
    )


# -- velocity (tamma_metrics.reports.velocity) ----------------------------------------


def _hours(**kwargs: Any) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, **kwargs)


class VelocityWindowSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    provider = serializers.CharField(allow_blank=True, help_text="Empty: every provider.")
    platform = serializers.CharField(allow_blank=True, help_text="Empty: every platform.")
    issue_type = serializers.CharField(allow_blank=True, help_text="Empty: every type.")
    since = serializers.DateTimeField(help_text="Midnight of the window's first day.")
    until = serializers.DateTimeField()
    time_zone = serializers.CharField()


class VelocityTotalsSerializer(serializers.Serializer):
    completed = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    prs_opened = serializers.IntegerField()
    prs_merged = serializers.IntegerField()


class CompletedDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    success = serializers.IntegerField()
    failure = serializers.IntegerField()
    timeout = serializers.IntegerField()


class ThroughputWeekSerializer(serializers.Serializer):
    week_start = serializers.DateField()
    days = serializers.IntegerField(
        help_text="Days of the window in this week (the last may be short)."
    )
    completed = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    # A declared field, moved out of the class by DRF's metaclass (not BaseSerializer.partial).
    partial = serializers.BooleanField(  # type: ignore[assignment]
        help_text="The week holding today (the last): not over, so its count is not a whole week's."
    )


class HoursSerializer(serializers.Serializer):
    median = _hours()
    p95 = _hours()
    count = serializers.IntegerField()


class WeekHoursSerializer(HoursSerializer):
    week_start = serializers.DateField()


class PullRequestDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    opened = serializers.IntegerField()
    merged = serializers.IntegerField()


class FirstTimeMergeSerializer(serializers.Serializer):
    issues_with_prs = serializers.IntegerField()
    first_pr_merged = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)


class AutonomySerializer(serializers.Serializer):
    finished = serializers.IntegerField()
    without_escalation = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)


class ApprovalWaitSerializer(HoursSerializer):
    approval_type = serializers.CharField()


class EscalationCountSerializer(serializers.Serializer):
    severity = serializers.CharField()
    reason = serializers.CharField()
    count = serializers.IntegerField()


class VelocityProviderSerializer(serializers.Serializer):
    provider = serializers.CharField()
    issues = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    median_cycle_hours = _hours()


class VelocitySerializer(serializers.Serializer):
    """Velocity and quality over the window (docs/reports.md); durations in hours, rates
    in 0..1 (null without data)."""

    window = VelocityWindowSerializer()
    totals = VelocityTotalsSerializer()
    completed_per_day = CompletedDaySerializer(many=True)
    throughput_per_week = ThroughputWeekSerializer(many=True)
    cycle_time_hours = WeekHoursSerializer(many=True)
    lead_time_hours = WeekHoursSerializer(many=True)
    pull_requests_per_day = PullRequestDaySerializer(many=True)
    time_to_merge_hours = HoursSerializer()
    first_time_merge = FirstTimeMergeSerializer()
    autonomy = AutonomySerializer()
    approval_wait_hours = ApprovalWaitSerializer(many=True)
    escalations = EscalationCountSerializer(many=True)
    providers = VelocityProviderSerializer(many=True)


# -- delivery (tamma_metrics.reports.delivery) ----------------------------------------

BAND_NAMES = ("elite", "high", "medium", "low")


class DeliveryWindowSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    time_zone = serializers.CharField()


class PreviousWindowSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()


class BandedSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    band = serializers.ChoiceField(BAND_NAMES, allow_null=True, help_text="Null without a value.")


class DoraKeysSerializer(serializers.Serializer):
    deployments = serializers.IntegerField()
    deployments_finished = serializers.IntegerField()
    failed_deployments = serializers.IntegerField()
    changes_deployed = serializers.IntegerField()
    incidents_resolved = serializers.IntegerField()
    pull_requests_merged = serializers.IntegerField()
    reverts = serializers.IntegerField(help_text="Merged pull requests that revert another.")
    revert_rate = serializers.FloatField(allow_null=True)
    deployment_frequency = BandedSerializer(help_text="Deployments per day.")
    lead_time_hours = BandedSerializer()
    change_failure_rate = BandedSerializer()
    recovery_time_hours = BandedSerializer()


class DeploymentDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    deployed = serializers.IntegerField()
    failed = serializers.IntegerField()


class StageSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(("coding", "pickup", "review", "merge", "deploy"))
    pull_requests = serializers.IntegerField()
    p50_hours = _hours()
    p95_hours = _hours()


class ReviewsSerializer(serializers.Serializer):
    """Over the pull requests merged in the window."""

    pull_requests = serializers.IntegerField()
    review_rounds_p50 = serializers.FloatField(allow_null=True)
    review_rounds_p95 = serializers.FloatField(allow_null=True)
    changes_requested = serializers.IntegerField()
    changes_requested_share = serializers.FloatField(allow_null=True)
    sized = serializers.IntegerField(help_text="Those whose size is known (files changed).")
    lines_changed_mean = serializers.FloatField(allow_null=True)
    files_changed_mean = serializers.FloatField(allow_null=True)


class WaitingForSerializer(serializers.Serializer):
    approvals = serializers.FloatField()
    reviews = serializers.FloatField()
    escalations = serializers.FloatField()


class WaitSerializer(serializers.Serializer):
    issues = serializers.IntegerField()
    cycle_hours = serializers.FloatField()
    waiting_hours = serializers.FloatField()
    working_hours = serializers.FloatField()
    waiting_share = serializers.FloatField(allow_null=True)
    waiting_for = WaitingForSerializer()


class ProviderWaitSerializer(WaitSerializer):
    provider = serializers.CharField()


class WaitingSerializer(WaitSerializer):
    providers = ProviderWaitSerializer(many=True)


class CostSerializer(serializers.Serializer):
    changes = serializers.IntegerField()
    good_changes = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    cost_per_change_usd = serializers.FloatField(allow_null=True)
    cost_per_good_change_usd = serializers.FloatField(allow_null=True)


class DeliveryProviderSerializer(CostSerializer):
    provider = serializers.CharField()
    deployments = serializers.IntegerField()
    change_failure_rate = serializers.FloatField(allow_null=True)


class BandLimitsSerializer(serializers.Serializer):
    elite = serializers.FloatField()
    high = serializers.FloatField()
    medium = serializers.FloatField()
    direction = serializers.ChoiceField(("above", "below", "at_most"))


class BandsSerializer(serializers.Serializer):
    deployment_frequency = BandLimitsSerializer()
    lead_time_hours = BandLimitsSerializer()
    change_failure_rate = BandLimitsSerializer()
    recovery_time_hours = BandLimitsSerializer()


class DeliverySerializer(serializers.Serializer):
    """The four DORA keys over the window and the one before it, with their bands; the
    pull-request stages; waiting for people; AI cost per change (docs/reports.md)."""

    window = DeliveryWindowSerializer()
    previous_window = PreviousWindowSerializer()
    keys = DoraKeysSerializer()
    previous_keys = DoraKeysSerializer()
    deployments_per_day = DeploymentDaySerializer(many=True)
    stages = StageSerializer(many=True)
    reviews = ReviewsSerializer()
    waiting = WaitingSerializer()
    cost = CostSerializer()
    providers = DeliveryProviderSerializer(many=True)
    bands = BandsSerializer()


# -- health (tamma_metrics.reports.health) --------------------------------------------


class HealthReasonSerializer(serializers.Serializer):
    about = serializers.CharField(
        allow_blank=True, help_text="The family it is about; empty when you may not see it."
    )
    reason = serializers.CharField()


class HealthRulesSerializer(serializers.Serializer):
    approval_wait_critical_seconds = serializers.FloatField()
    escalations_per_hour_degraded = serializers.FloatField()
    queue_depth_degraded = serializers.FloatField()


class ActiveLoopsSerializer(serializers.Serializer):
    mode = serializers.CharField()
    environment = serializers.CharField()
    active = serializers.IntegerField()


class PendingApprovalsSerializer(serializers.Serializer):
    approval_type = serializers.CharField()
    pending = serializers.IntegerField()
    oldest_age_seconds = serializers.IntegerField(allow_null=True)


class QueueDepthSerializer(serializers.Serializer):
    queue_type = serializers.CharField()
    priority = serializers.CharField()
    queued = serializers.IntegerField()


class RecentEscalationSerializer(serializers.Serializer):
    escalation_type = serializers.CharField()
    severity = serializers.CharField()
    component = serializers.CharField()
    reason = serializers.CharField()
    age_seconds = serializers.IntegerField()


class LastScrapeSerializer(serializers.Serializer):
    time = serializers.FloatField(help_text="Unix time.")
    duration_seconds = serializers.FloatField()


class MetricsLayerSerializer(serializers.Serializer):
    label_folds = serializers.DictField(child=serializers.IntegerField(), help_text="By family.")
    label_overflow = serializers.DictField(child=serializers.IntegerField(), help_text="By family.")
    multiprocess_files = serializers.IntegerField(
        allow_null=True, help_text="Null outside multiprocess mode."
    )


class HealthSerializer(serializers.Serializer):
    """The overall status and the rules that set it; each other part only for a caller
    who may see its family, and the database's parts only when it answered."""

    status = serializers.ChoiceField(("healthy", "degraded", "critical"))
    covers = serializers.CharField(
        help_text="What the status is about: Tamma's work. /metrics/health is the service's "
        "liveness (ok or unavailable)."
    )
    reasons = HealthReasonSerializer(many=True)
    rules = HealthRulesSerializer()
    checked_at = serializers.DateTimeField()
    database_up = serializers.BooleanField(required=False)
    active_loops = ActiveLoopsSerializer(many=True, required=False)
    approvals = PendingApprovalsSerializer(many=True, required=False)
    queue_depth = QueueDepthSerializer(many=True, required=False)
    recent_escalations = RecentEscalationSerializer(many=True, required=False)
    escalations_last_hour = serializers.IntegerField(required=False)
    last_scrape = LastScrapeSerializer(
        allow_null=True, required=False, help_text="Null before the first scrape."
    )
    metrics_layer = MetricsLayerSerializer(required=False)


# -- webhooks (tamma_metrics.api.webhooks) --------------------------------------------


class WebhookResultSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(("applied", "unchanged", "stale", "duplicate"))
    result = serializers.CharField(
        required=False,
        help_text="The row's answer, as the state API gives it (not for a duplicate).",
    )


class WebhookConflictSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(("conflict",))
    # DRF's metaclass moves declared fields out of the class (as in ItemResult).
    errors = serializers.DictField(  # type: ignore[assignment]
        help_text="Field -> why it cannot be written."
    )
    current = serializers.DictField(required=False, help_text="What the row holds.")


class WebhookIgnoredSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(("ignored",))
    detail = serializers.CharField()


WEBHOOK_REQUEST = {"application/json": OpenApiTypes.OBJECT}
WEBHOOK_RESPONSES = {
    200: OpenApiResponse(
        WebhookResultSerializer,
        "Applied to the rows, already held (unchanged), older than what the rows hold "
        "(stale), or a redelivery (duplicate).",
    ),
    202: OpenApiResponse(WebhookIgnoredSerializer, "An event or object the app does not track."),
    409: OpenApiResponse(
        WebhookConflictSerializer,
        "It contradicts what the rows hold (a final status, a counted field); nothing "
        "written, the delivery id not kept.",
    ),
    400: OpenApiResponse(
        PolymorphicProxySerializer(
            component_name="WebhookRejection",
            serializers=[ErrorSerializer, FieldErrorsSerializer],
            resource_type_field_name=None,
        ),
        "The body is not a JSON object (or nests too deep, holds NaN, a number too large or "
        "a lone surrogate), or a field or the delivery id is missing or wrong (a time that "
        "does not exist or contradicts the row's included).",
    ),
    **refusals(
        401,
        403,
        411,
        413,
        415,
        503,
        meaning={
            401: "The signature or token is missing or wrong.",
            403: "Webhooks from this platform are off (no secret configured).",
            413: "The body is over WEBHOOK_MAX_BYTES.",
        },
    ),
}
