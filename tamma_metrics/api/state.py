"""The state API over HTTP: validation of each kind's items and the one view that serves
them all. What an item does to the rows is decided in ``tamma_metrics.state``."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.decorators import method_decorator
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from .. import access, state
from ..conf import app_settings
from ..models import Approval as ApprovalRow
from ..models import (
    AutonomousLoop,
    Deployment,
    Escalation,
    Incident,
    Issue,
    Platform,
    Priority,
    PullRequest,
)
from . import bodies, schema
from .serializers import FoldSerializer, Label, StrictIntegerField, StrictSerializer

__all__ = ["SERIALIZERS", "StateView"]


# No time of Tamma's work or of a platform's event comes before this: a 1970 (a zero
# epoch) is a bug in the sender, not a fact.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)


class ObservedTime(serializers.DateTimeField):
    """An ISO 8601 time with its time zone, from 2000 on and not ahead of the server's
    clock by more than INGEST_MAX_FUTURE_SECONDS (a time without a zone would be read in
    the server's)."""

    default_error_messages = {
        "naive": "Give the time zone (Z or +hh:mm).",
        "future": "Must not be more than {seconds} seconds in the future.",
        "past": "Must not be before 2000-01-01.",
    }

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None
            if parsed is not None and timezone.is_naive(parsed):
                self.fail("naive")
        moment = super().to_internal_value(value)
        skew = app_settings.INGEST_MAX_FUTURE_SECONDS
        if moment > timezone.now() + timedelta(seconds=skew):
            self.fail("future", seconds=skew)
        if moment < EARLIEST_TIME:
            self.fail("past")
        return moment


class StrictText(serializers.CharField):
    """A string, and only a string: a key sent as a number is a bug in the sender."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def Text(max_length: int, **kwargs: Any) -> serializers.CharField:  # noqa: N802
    return StrictText(max_length=max_length, trim_whitespace=False, **kwargs)


def _column(model: Any, name: str) -> int:
    return model._meta.get_field(name).max_length


def _in_order(attrs: dict[str, Any], *names: str) -> dict[str, list[str]]:
    """Errors for times of one item that run backwards (``names`` in lifecycle order)."""
    errors, earlier = {}, None
    for name in names:
        value = attrs.get(name)
        if value is None:
            continue
        if earlier is not None and value < attrs[earlier]:
            errors[name] = [f"Must not be before {earlier}."]
        earlier = name
    return errors


class StateItem(StrictSerializer):
    observed_at = ObservedTime(help_text="When Tamma saw this state; older than the row: stale.")
    kind = ""  # its times follow each other as the kind's chains say (checked again
    # against the row's times when it is written)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}
        for chain in state.KINDS[self.kind].chains:
            errors = _in_order(attrs, *chain) | errors
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


def _platform() -> serializers.ChoiceField:
    return serializers.ChoiceField(Platform.values)


def _repository() -> serializers.CharField:
    return Text(_column(Issue, "repository"), help_text="owner/name on the platform.")


def _issue_reference(**kwargs: Any) -> serializers.CharField:
    return Text(
        _column(Issue, "external_id"),
        help_text="The issue's external_id, in the same platform and repository.",
        **kwargs,
    )


class IssueItem(StateItem):
    kind = "issues"
    platform = _platform()
    repository = _repository()
    external_id = Text(_column(Issue, "external_id"))
    issue_type = Label(max_length=_column(Issue, "issue_type"))
    provider = Label(max_length=_column(Issue, "provider"))
    status = serializers.ChoiceField(Issue.Status.values)
    complexity = Label(max_length=_column(Issue, "complexity"), required=False)
    priority = serializers.ChoiceField(Priority.values, required=False)
    title = Text(_column(Issue, "title"), required=False, allow_blank=True)
    created_at = ObservedTime(required=False)
    started_at = ObservedTime(required=False)
    completed_at = ObservedTime(required=False)
    cost_usd = serializers.DecimalField(
        max_digits=14,
        decimal_places=6,
        min_value=0,
        coerce_to_string=False,
        required=False,
        help_text="What the AI providers charged for the work on this issue so far (USD); "
        "the newest observation's figure replaces the row's.",
    )


class PullRequestItem(StateItem):
    kind = "pull-requests"
    platform = _platform()
    repository = _repository()
    number = StrictIntegerField(min_value=1, max_value=2**31 - 1)
    issue_external_id = _issue_reference()
    status = serializers.ChoiceField(PullRequest.Status.values)
    actor = Label(max_length=_column(PullRequest, "actor"), required=False)
    merge_strategy = Label(max_length=_column(PullRequest, "merge_strategy"), required=False)
    created_at = ObservedTime(required=False)
    merged_at = ObservedTime(required=False)
    # The timeline (stage durations are counted from it at the merge).
    first_commit_at = ObservedTime(required=False)
    ready_at = ObservedTime(required=False, help_text="Out of draft; left out: when opened.")
    first_review_at = ObservedTime(required=False)
    approved_at = ObservedTime(required=False)
    closed_at = ObservedTime(required=False)
    review_rounds = StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False)
    changes_requested = StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False)
    additions = StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False)
    deletions = StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False)
    files_changed = StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False)
    is_revert = serializers.BooleanField(required=False)


class ApprovalItem(StateItem):
    kind = "approvals"
    platform = _platform()
    repository = _repository()
    issue_external_id = _issue_reference()
    external_id = Text(_column(ApprovalRow, "external_id"))
    approval_type = Label(max_length=_column(ApprovalRow, "approval_type"))
    status = serializers.ChoiceField(ApprovalRow.Status.values)
    priority = serializers.ChoiceField(Priority.values, required=False)
    requested_at = ObservedTime(required=False)
    decided_at = ObservedTime(required=False)


class EscalationItem(StateItem):
    external_id = Text(_column(Escalation, "external_id"))
    escalation_type = Label(max_length=_column(Escalation, "escalation_type"))
    severity = Label(max_length=_column(Escalation, "severity"))
    component = Label(max_length=_column(Escalation, "component"))
    reason = Label(max_length=_column(Escalation, "reason"))
    created_at = ObservedTime(required=False)
    resolved_at = ObservedTime(
        required=False, help_text="When a person answered it and the work went on."
    )
    platform = _platform()
    repository = _repository()
    issue_external_id = _issue_reference()
    kind = "escalations"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("platform", "repository", "issue_external_id"):
            self.fields[name].required = False

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("platform", "repository", "issue_external_id") if name in attrs]
        if given and len(given) != 3:
            missing = {"platform", "repository", "issue_external_id"} - set(given)
            raise serializers.ValidationError(
                {
                    name: ["Name the issue by platform, repository and issue_external_id."]
                    for name in sorted(missing)
                }  # fmt: skip
            )
        return super().validate(attrs)


class LoopHeartbeat(StateItem):
    kind = "loops"
    name = Text(_column(AutonomousLoop, "name"))
    mode = serializers.ChoiceField(AutonomousLoop.Mode.values)
    environment = serializers.ChoiceField(AutonomousLoop.Environment.values)
    status = serializers.ChoiceField(AutonomousLoop.Status.values)
    observed_at = ObservedTime(help_text="The heartbeat's time; the loop is active while it "
                               "is running and this is younger than the TTL.")  # fmt: skip


class DeploymentItem(StateItem):
    kind = "deployments"
    platform = _platform()
    repository = _repository()
    external_id = Text(_column(Deployment, "external_id"))
    environment = Label(max_length=_column(Deployment, "environment"), required=False)
    tier = serializers.ChoiceField(
        Deployment.Tier.values,
        required=False,
        help_text="The environment's tier (GitLab's environment_tier). Left out: production "
        "when the environment's name is in PRODUCTION_ENVIRONMENTS, else none.",
    )
    status = serializers.ChoiceField(Deployment.Status.values)
    commit_sha = Text(_column(Deployment, "commit_sha"), required=False, allow_blank=True)
    started_at = ObservedTime(required=False)
    finished_at = ObservedTime(required=False)
    pull_requests = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=2**31 - 1),
        required=False,
        max_length=1000,
        help_text="Numbers of the pull requests it shipped, in the same repository "
        "(they only grow: numbers left out stay linked).",
    )


class IncidentItem(StateItem):
    kind = "incidents"
    platform = _platform()
    repository = _repository()
    external_id = Text(_column(Incident, "external_id"))
    severity = Label(max_length=_column(Incident, "severity"))
    status = serializers.ChoiceField(Incident.Status.values)
    opened_at = ObservedTime(required=False)
    resolved_at = ObservedTime(required=False)
    deployment_external_id = Text(
        _column(Deployment, "external_id"),
        required=False,
        help_text="The deployment that caused it, in the same repository. Left out: the "
        "last production deployment deployed before it opened.",
    )


SERIALIZERS: dict[str, type[StateItem]] = {
    "issues": IssueItem,
    "pull-requests": PullRequestItem,
    "approvals": ApprovalItem,
    "escalations": EscalationItem,
    "loops": LoopHeartbeat,
    "deployments": DeploymentItem,
    "incidents": IncidentItem,
}

# -- answers ------------------------------------------------------------------------

STATUSES = ("created", "updated", "unchanged", "stale", "rejected", "not_found", "conflict")
# A single item's HTTP status; a batch's when no item was accepted.
HTTP_STATUS = {
    "created": status.HTTP_201_CREATED,
    "rejected": status.HTTP_400_BAD_REQUEST,
    "not_found": status.HTTP_404_NOT_FOUND,
    "conflict": status.HTTP_409_CONFLICT,
}
ACCEPTED = frozenset({"created", "updated", "unchanged", "stale"})
COUNT_NAMES = {"conflict": "conflicts"}


class ItemResult(serializers.Serializer):
    index = serializers.IntegerField()
    key = serializers.DictField(required=False, help_text="The item's natural key.")
    status = serializers.ChoiceField(STATUSES)
    # DRF's metaclass moves declared fields out of the class: this does not replace the
    # errors property, whatever the stub's reading of it.
    errors = serializers.DictField(  # type: ignore[assignment]
        required=False, help_text="Field -> what is wrong."
    )
    current = serializers.DictField(
        required=False, help_text="What the row holds (stale, conflict): status, observed_at."
    )
    folded = FoldSerializer(many=True, required=False)


class StateResponse(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    stale = serializers.IntegerField()
    rejected = serializers.IntegerField()
    not_found = serializers.IntegerField()
    conflicts = serializers.IntegerField()
    results = ItemResult(many=True)


def _http_status(results: list[dict[str, Any]], single: bool) -> int:
    kinds = {result["status"] for result in results}
    if single or not kinds & ACCEPTED:
        shared = kinds.pop() if len(kinds) == 1 else "rejected"
        return HTTP_STATUS.get(shared, status.HTTP_200_OK)
    return status.HTTP_200_OK


def _key(kind: str, raw: Any) -> dict[str, Any] | None:
    """The item's natural key as sent, to say which item an answer is about; only the
    values an answer can carry as they are (a NaN, an infinity, an integer past 2**53, a
    nested value is left out: the item is rejected naming the field anyway)."""
    if not isinstance(raw, dict):
        return None
    names = state.KINDS[kind].key
    return {name: raw[name] for name in names if name in raw and _echoable(raw[name])} or None


def _echoable(value: Any) -> bool:
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return abs(value) <= 2**53
    return isinstance(value, float) and math.isfinite(value)


DESCRIPTIONS = {
    "issues": "Issues by (platform, repository, external_id).",
    "pull-requests": "Pull requests by (platform, repository, number), each of an issue "
    "named by issue_external_id.",
    "approvals": "Approval requests by (platform, repository, issue_external_id, external_id).",
    "escalations": "Escalations by external_id, optionally of an issue.",
    "loops": "Heartbeats of autonomous loops by name.",
    "deployments": "Deployments by (platform, repository, external_id), with the pull "
    "requests they shipped by number.",
    "incidents": "Incidents by (platform, repository, external_id), each attributed to a "
    "deployment (named, or the last production one before it).",
}


def _schema(kind: str) -> Any:
    item = SERIALIZERS[kind]
    name = item.__name__
    # item(many=True, min_length=1) in DRF's words (BaseSerializer.__new__ calls many_init),
    # whose stub knows no min_length.
    items = item.many_init(min_length=1)
    batch = type(f"{name}Batch", (StrictSerializer,), {"items": items})
    return extend_schema(
        operation_id=f"upsert_{kind.replace('-', '_')}",
        summary=f"Write {kind.replace('-', ' ')}",
        description=(
            f'{DESCRIPTIONS[kind]} One item or {{"items": [...]}} (at most STATE_MAX_BATCH), '
            "one transaction; each item is answered created, updated, unchanged, stale "
            "(older than the row), rejected (400, errors name the fields), not_found (404: "
            "a row it names does not exist yet) or conflict (409: the lifecycle or an already "
            "counted field forbids it). A single item's HTTP status is its own; a batch "
            "answers 200 when any item was accepted. 411 for a chunked body, 413 over the "
            "size or batch limit, 403 without tamma_metrics.change_domain, 503 with "
            "Retry-After when the database fails (nothing written). See docs/state.md."
        ),
        request=PolymorphicProxySerializer(
            component_name=f"{name}Request",
            serializers=[item, batch],
            resource_type_field_name=None,
        ),
        responses={
            200: OpenApiResponse(
                StateResponse,
                "A batch with at least one item accepted, or a single item updated, "
                "unchanged or stale.",
            ),
            201: OpenApiResponse(StateResponse, "A single item created."),
            400: OpenApiResponse(
                schema.or_error(StateResponse, "StateRejection"),
                "Every item rejected, or the items' answers differ and none was accepted; "
                'or the body as a whole is malformed ({"detail": ...}: not JSON, nested too '
                "deep, neither an item nor a batch, an empty batch).",
            ),
            404: OpenApiResponse(StateResponse, "Every item not_found."),
            409: OpenApiResponse(StateResponse, "Every item a conflict."),
            **schema.refusals(
                *schema.WRITE_REFUSALS,
                meaning={403: "Without the tamma_metrics.change_domain permission."},
            ),
        },
        examples=EXAMPLES.get(kind, []),
    )


EXAMPLES = {
    "issues": [
        OpenApiExample(
            "An issue in progress",
            request_only=True,
            value={
                "platform": "github",
                "repository": "acme/shop",
                "external_id": "42",
                "issue_type": "bug",
                "provider": "anthropic",
                "status": "in_progress",
                "created_at": "2026-12-05T09:00:00Z",
                "started_at": "2026-12-05T09:05:00Z",
                "observed_at": "2026-12-05T09:05:00Z",
            },
        )
    ]
}


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class StateView(bodies.DatabaseAwareView):
    """POST one item of a kind, or ``{"items": [...]}``; see docs/state.md."""

    authentication_classes = [access.TokenAuthentication]
    permission_classes = [IsAuthenticated, access.CanWriteState]
    parser_classes = [bodies.LenientJSONParser]
    kind = ""

    @classmethod
    def of(cls, kind: str) -> Any:
        def post(self: StateView, request: Request) -> Response:
            return StateView.post(self, request)

        # A function of its own per kind: the schema decorator marks the function.
        name = f"{SERIALIZERS[kind].__name__}View"
        view = type(name, (cls,), {"kind": kind, "post": _schema(kind)(post)})
        return cast("type[StateView]", view).as_view()

    def post(self, request: Request) -> Response:
        raw_items = bodies.items(request, "items", app_settings.STATE_MAX_BATCH)
        if isinstance(raw_items, Response):
            return raw_items
        single = not (isinstance(request.data, dict) and "items" in request.data)
        results: list[dict[str, Any]] = []
        valid: list[tuple[int, dict[str, Any]]] = []
        for index, raw in enumerate(raw_items):
            result: dict[str, Any] = {"index": index}
            key = _key(self.kind, raw)
            if key:
                result["key"] = key
            results.append(result)
            if not isinstance(raw, dict):
                result.update(status="rejected", errors={"non_field_errors": ["Send an object."]})
                continue
            serializer = SERIALIZERS[self.kind](data=raw)
            if serializer.is_valid():
                valid.append((index, dict(serializer.validated_data)))
            else:
                result.update(status="rejected", errors=serializer.errors)
        outcomes = state.apply(self.kind, [item for _, item in valid]) if valid else []
        for (index, _), outcome in zip(valid, outcomes, strict=True):
            result = results[index]
            result["status"] = outcome.status
            for name in ("errors", "current", "folded"):
                if getattr(outcome, name):
                    result[name] = getattr(outcome, name)
        body: dict[str, Any] = {
            COUNT_NAMES.get(name, name): sum(r["status"] == name for r in results)
            for name in STATUSES
        }
        body["results"] = results
        return Response(body, status=_http_status(results, single))
