"""Wire format of the ingest API: one flat JSON object per event, typed by ``type``.

Validation is strict about shape (unknown fields, missing fields, bad numbers are
rejected with the field at fault) and lenient about label values: a value outside a
vocabulary is folded by the label policy and reported back, never rejected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from .. import catalogue, record
from ..conf import app_settings, max_event_value

LABEL_MAX_LENGTH = 200


def Label(**kwargs: Any) -> serializers.CharField:  # noqa: N802 - reads like a field class
    """A label value: any text; the label policy makes it safe."""
    kwargs.setdefault("max_length", LABEL_MAX_LENGTH)
    return serializers.CharField(trim_whitespace=False, **kwargs)


class FiniteFloatField(serializers.FloatField):
    """A float that refuses NaN and infinities (JSON allows neither; lenient parsers do)."""

    default_error_messages = {"finite": "Must be a finite number."}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        try:
            number = float(data) if isinstance(data, int | float | str) else 0.0
        except ValueError:
            number = 0.0  # not a number at all: the parent says so
        if not math.isfinite(number):
            self.fail("finite")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON number that is whole: no booleans, no floats with a fraction, and no strings
    ("7" is a bug in the sender, not a number)."""

    def to_internal_value(self, data: Any) -> int:
        if (
            isinstance(data, bool | str)
            or (isinstance(data, float) and not data.is_integer())
            or not isinstance(data, int | float)
        ):
            self.fail("invalid")
        return super().to_internal_value(data)


class _Bounded:
    """Between 0 and the most one event may report for ``kind`` (MAX_EVENT_VALUES or
    INGEST_MAX_DURATION_SECONDS, read when validating: they are settings)."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        # A mixin: the number field after it in the MRO takes min_value (mypy sees object).
        super().__init__(min_value=0, **kwargs)  # type: ignore[call-arg]

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)  # type: ignore[misc]  # the same mixin
        ceiling = max_event_value(self.kind)
        if value > ceiling:
            unit = " seconds" if self.kind == "duration_seconds" else ""
            limit = int(ceiling) if ceiling.is_integer() else ceiling
            raise serializers.ValidationError(f"Must be at most {limit}{unit}.")
        return value


class BoundedFloat(_Bounded, FiniteFloatField):
    pass


class BoundedInteger(_Bounded, StrictIntegerField):
    pass


def DurationField(**kwargs: Any) -> BoundedFloat:  # noqa: N802 - reads like a field class
    """Seconds: non-negative, finite, at most INGEST_MAX_DURATION_SECONDS."""
    return BoundedFloat("duration_seconds", **kwargs)


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know, next to the errors of those it does."""

    def to_internal_value(self, data: Any) -> Any:
        unknown = {}
        if isinstance(data, Mapping):
            unknown = {name: ["Unknown field."] for name in sorted(set(data) - set(self.fields))}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


# A field per token type of the catalogue.
TokensSerializer = type(
    "TokensSerializer",
    (StrictSerializer,),
    {kind: BoundedInteger("tokens", required=False) for kind in catalogue.TOKEN_TYPES},
)


ENVELOPE = frozenset({"type", "event_id", "timestamp"})


class StrictRegexField(serializers.RegexField):
    """A string matching the pattern; a number is refused, not turned into its text (NaN
    would become the id "nan")."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class EventSerializer(StrictSerializer):
    """Fields every event has; subclasses add their family's labels and values."""

    type = serializers.CharField()
    event_id = StrictRegexField(
        r"^[A-Za-z0-9._:\-]{1,128}$",
        required=False,
        help_text="Your id for the event; a retry with the same id within the "
        "deduplication window (24 h by default) is acknowledged, not counted again.",
    )
    timestamp = serializers.DateTimeField(
        required=False, help_text="When the event happened (ISO 8601); not in the future."
    )

    def validate_timestamp(self, value: Any) -> Any:
        skew = timedelta(seconds=app_settings.INGEST_MAX_FUTURE_SECONDS)
        if value > timezone.now() + skew:
            raise serializers.ValidationError("Must not be in the future.")
        return value

    # The recording function of the event's family; its keyword arguments are the
    # event's fields (less the envelope: type, event_id, timestamp).
    recorder: Callable[..., None]

    def record(self) -> None:
        self.record_validated(self.validated_data)

    def record_validated(self, validated: Mapping[str, Any]) -> None:
        """Record an event this serializer's type validated (``run_validation``)."""
        type(self).recorder(**{key: v for key, v in validated.items() if key not in ENVELOPE})


class AiRequestSerializer(EventSerializer):
    recorder = record.ai_request
    provider = Label()
    model = Label()
    request_type = Label()
    outcome = Label()
    duration_seconds = DurationField()
    tokens = TokensSerializer(required=False)
    cost_usd = BoundedFloat("cost_usd", required=False)


class TestExecutionSerializer(EventSerializer):
    recorder = record.test_execution
    test_type = Label()
    framework = Label()
    language = Label()
    result = Label()
    duration_seconds = DurationField()


class CodeGenerationSerializer(EventSerializer):
    recorder = record.code_generation
    provider = Label()
    language = Label()
    complexity = Label()
    file_count = BoundedInteger("file_count")
    duration_seconds = DurationField()


class CodeChangeSerializer(EventSerializer):
    recorder = record.code_change
    change_type = Label()
    language = Label()
    actor = Label()
    file_type = Label()
    count = BoundedInteger("count", default=1)


EVENT_TYPES: dict[str, type[EventSerializer]] = {
    "ai_request": AiRequestSerializer,
    "test_execution": TestExecutionSerializer,
    "code_generation": CodeGenerationSerializer,
    "code_change": CodeChangeSerializer,
}

# Domain events are state: a row holds them, and its transition counts them. An event of
# one would count on /metrics and be missing from every page.
MOVED_TO_STATE = {"issue_transition": "/api/v1/issues", "escalation": "/api/v1/escalations"}

for _kind, _serializer in EVENT_TYPES.items():
    # Each type's schema names its own value: the discriminator of the OpenAPI union.
    _serializer._declared_fields["type"] = serializers.ChoiceField([_kind])


def for_event(
    data: Any, validators: dict[str, EventSerializer] | None = None
) -> EventSerializer | dict:
    """The serializer for one raw event, or the errors when its type is unusable. With
    ``validators``, one serializer per type is made and reused (``run_validation``)."""
    if not isinstance(data, dict):
        return {"non_field_errors": ["Each event must be a JSON object."]}
    kind = data.get("type")
    if kind is None:
        return {"type": ["This field is required."]}
    if not isinstance(kind, str):  # a list or an object would not even hash
        return {"type": [f"Must be a string; one of {', '.join(EVENT_TYPES)}."]}
    if kind in MOVED_TO_STATE:
        return {
            "type": [
                f"{kind} is state, not an event: POST it to {MOVED_TO_STATE[kind]} (the state "
                "API), so the row and the counter agree."
            ]
        }
    if kind not in EVENT_TYPES:
        return {"type": [f"Unknown event type; one of {', '.join(EVENT_TYPES)}."]}
    if validators is None:
        return EVENT_TYPES[kind](data=data)
    if kind not in validators:
        validators[kind] = EVENT_TYPES[kind]()
    return validators[kind]


# -- responses (documented in the OpenAPI schema) -------------------------------------


# DRF's metaclass moves declared fields out of the class, so a field may share a name with
# an attribute of Field or Serializer (label, errors, source); the stubs cannot say so.
class FoldSerializer(serializers.Serializer):
    family = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    recorded_as = serializers.CharField()


class EventResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    event_id = serializers.CharField(required=False)
    status = serializers.ChoiceField(["counted", "duplicate", "rejected"])
    errors = serializers.DictField(required=False)  # type: ignore[assignment]
    folded = FoldSerializer(many=True, required=False)
    overflow = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Families whose series cap sent it to overflow.",
    )


class IngestResponseSerializer(serializers.Serializer):
    counted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = EventResultSerializer(many=True)


class FamilySerializer(serializers.Serializer):
    name = serializers.CharField()
    full_name = serializers.CharField()
    type = serializers.CharField()
    help = serializers.CharField()
    labels = serializers.ListField(child=serializers.CharField())
    buckets = serializers.ListField(child=serializers.FloatField())
    audience = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]
    visible = serializers.BooleanField(help_text="Whether you may see it on /metrics.")
