"""The recording API: one function per event family, plus timers.

Receivers, the ingest API and host code all record through here, so every event
passes the same label guard. A failure in here is logged and counted in
``metrics_errors_total{stage="record"}``; it is never raised into the caller.

    from tamma_metrics import record
    record.ai_request(provider="anthropic", model="claude-sonnet", request_type="chat",
                      outcome="success", duration_seconds=2.5,
                      tokens={"input": 1200, "output": 300}, cost_usd=0.021)

    with record.time_ai_request(provider="openai", model="gpt-4o", request_type="chat") as t:
        reply = client.chat(...)
        t.tokens = {"input": reply.usage.input, "output": reply.usage.output}
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from . import backends, catalogue, instruments, labels, selfmetrics
from .catalogue import Kind, Source
from .conf import app_settings, max_event_value, on_reset

__all__ = [
    "Adjustment",
    "Rejected",
    "SUCCESS",
    "FAILURE",
    "TIMEOUT",
    "TOKEN_TYPES",
    "Timer",
    "ai_request",
    "api_response",
    "clear_cache",
    "code_change",
    "code_generation",
    "connection_closed",
    "connection_opened",
    "metric",
    "reporting",
    "test_execution",
    "time_ai_request",
    "time_code_generation",
    "time_test_execution",
    "track_connection",
]

# Counts of the domain's transitions (issue_processed, pr_created, pr_merged, pr_stage,
# escalation, approval_decided, deployment_finished, change_deployed, incident_opened,
# incident_resolved) are not public: only ``transitions`` calls them, for a row that
# changed, so no path counts a domain event that no row holds (tests/test_record.py).
DOMAIN = (
    "approval_decided",
    "change_deployed",
    "deployment_finished",
    "escalation",
    "incident_opened",
    "incident_resolved",
    "issue_processed",
    "pr_created",
    "pr_merged",
    "pr_stage",
)

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

SUCCESS, FAILURE, TIMEOUT = "success", "failure", "timeout"
TOKEN_TYPES = catalogue.TOKEN_TYPES


@dataclass(frozen=True)
class Adjustment:
    """What the label policy changed in one recorded event."""

    family: str
    folded: dict[str, str]  # label -> the value recorded instead (the fold value)
    overflow: bool  # recorded in the family's overflow series


_local = threading.local()


@contextmanager
def reporting() -> Iterator[list[Adjustment]]:
    """Collect the label policy's adjustments to the events recorded inside the block."""
    report: list[Adjustment] = []
    _local.report = report
    try:
        yield report
    finally:
        _local.report = None


class _Series:
    """One label set of one family: the instrument child, the self-metrics to bump with
    it (folds, overflow), what the push backends are told and what the policy changed."""

    __slots__ = ("child", "side_effects", "family", "labels", "folded", "overflow", "plain")

    def __init__(
        self,
        child: Any,
        side_effects: tuple[Any, ...],
        family: catalogue.Family,
        label_values: dict[str, str],
        folded: dict[str, str],
        overflow: bool,
    ) -> None:
        self.child, self.side_effects = child, side_effects
        self.family, self.labels = family, label_values
        self.folded, self.overflow = folded, overflow
        # Nothing but the write itself, unless a backend or a report listens (checked per
        # call): the common case costs one attribute test more than the child's write.
        self.plain = not side_effects and not folded and not overflow

    def _apply(self, operation: str, value: float) -> None:
        for counter in self.side_effects:  # every folded or overflowing event is counted
            counter.inc()
        getattr(self.child, operation)(value)
        target = backends.dispatcher()
        if target is not None:
            target.put(backends.Sample(self.family, operation, value, self.labels))
        report = getattr(_local, "report", None)
        if report is not None and (self.folded or self.overflow):
            report.append(Adjustment(self.family.name, self.folded, self.overflow))

    def inc(self, value: float = 1.0) -> None:
        if self.plain and backends.dispatcher() is None:
            self.child.inc(value)
        else:
            self._apply("inc", value)

    def dec(self, value: float = 1.0) -> None:
        self._apply("dec", value)

    def observe(self, value: float) -> None:
        if self.plain and backends.dispatcher() is None:
            self.child.observe(value)
        else:
            self._apply("observe", value)

    def set(self, value: float) -> None:
        self._apply("set", value)


# (family, raw label values) -> _Series. A hit skips the label guard and
# prometheus_client's keyword handling; the bound keeps hostile input from growing it;
# a label policy change empties it.
_children: dict[tuple[str, tuple[Any, ...]], _Series] = {}
_generation = -1
_CHILD_CACHE_LIMIT = 50_000


def _child(family: str, values: tuple[Any, ...], *, patient: bool = False) -> _Series:
    global _generation
    current = labels.generation()
    if current != _generation:
        _children.clear()
        _generation = current
    key = (family, values)
    series = _children.get(key)
    if series is None:
        series = _guarded_series(family, values, patient)
        if len(_children) >= _CHILD_CACHE_LIMIT:
            _children.clear()
        _children[key] = series
    return series


def _row_child(family: str, values: tuple[Any, ...]) -> _Series:
    """The series of a row's transition: its label set is judged patiently (see
    ``labels.admit``), as the row's own values were, so the counter carries the row's
    labels however busy the database was (never the overflow series for a slow answer)."""
    return _child(family, values, patient=True)


def _guarded_series(family_name: str, values: tuple[Any, ...], patient: bool = False) -> _Series:
    family = catalogue.get(family_name)
    if len(values) != len(family.labels):
        raise ValueError(f"{family_name} takes labels {family.labels}, got {len(values)} values")
    result = labels.guard(family, values, patient=patient)
    side = [
        instruments.get("metrics_label_folds_total").labels(family_name, label)
        for label in result.folded
    ]
    side += [
        instruments.get("metrics_label_redactions_total").labels(family_name, label)
        for label in result.redacted
    ]
    if result.overflow:
        side.append(instruments.get("metrics_label_overflow_total").labels(family_name))
    child = instruments.get(family_name).labels(*result.values)
    recorded = dict(zip(family.labels, result.values, strict=True))
    # Reported back to the caller (the ingest API says what it recorded instead).
    folded = {label: recorded[label] for label in (*result.folded, *result.redacted)}
    return _Series(child, tuple(side), family, recorded, folded, result.overflow)


@on_reset
def clear_cache() -> None:
    """Forget cached children (a label policy or settings change)."""
    _children.clear()


class Rejected(ValueError):
    """A number an event may not report: nothing of the event is recorded."""


def _guarded(func: Callable[P, None]) -> Callable[P, None]:
    """Skip when metrics are off; log and count any failure instead of raising it.

    Every number is checked, and every series an event writes is looked up (its entry
    created in the multiprocess file, which fails when the folder is full), before
    anything is recorded, so an event is recorded whole or not at all."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            if app_settings.ENABLED:
                func(*args, **kwargs)
        except Rejected as exc:
            logger.warning("tamma_metrics: %s not recorded: %s", func.__name__, exc)
            selfmetrics.count_error("rejected")
        except Exception as exc:
            if selfmetrics.count_disk_error(exc):  # the folder is full: logged once
                return
            logger.exception("tamma_metrics: recording %s failed", func.__name__)
            selfmetrics.count_error("record")

    return wrapper


def _bounded(value: float, what: str, kind: str | None = None) -> float:
    """``value`` as a float if it is between 0 and its kind's MAX_EVENT_VALUES; else
    Rejected (integers too large for a float included)."""
    # The common case, without exceptions: a plain number within bounds.
    if (type(value) is float or type(value) is int) and 0 <= value <= max_event_value(kind or what):
        return float(value)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    except (TypeError, ValueError):
        raise Rejected(f"{what} must be a number, got {value!r}") from None
    ceiling = max_event_value(kind or what)
    if not 0 <= number <= ceiling:  # NaN fails both comparisons
        limit = int(ceiling) if ceiling.is_integer() else ceiling
        raise Rejected(f"{what} must be between 0 and {limit}, got {value!r}"[:200])
    return number


def _whole(value: Any, what: str) -> Any:
    """``value`` if it is a whole number (an int, or a float without a fraction)."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    ):
        raise Rejected(f"{what} must be a whole number, got {value!r}")
    return value


def metric(name: str, value: float = 1.0, **label_values: Any) -> None:
    """Record a family by name, e.g. one of the host project's ``CUSTOM_FAMILIES``.

    Counters add ``value``, histograms observe it, gauges are set to it. An unknown
    family or label name raises ValueError at once: that is a bug in the caller.
    """
    try:
        family = catalogue.get(name)
    except KeyError:
        known = sorted(f.name for f in catalogue.families() if f.source is Source.EVENT)
        raise ValueError(f"unknown metric family {name!r}; recordable: {known}") from None
    if family.source is not Source.EVENT:
        raise ValueError(f"{name} is computed, not recorded")
    unknown = sorted(set(label_values) - set(family.labels))
    missing = sorted(set(family.labels) - set(label_values))
    if unknown or missing:
        raise ValueError(
            f"{name} takes labels {list(family.labels)}: unknown {unknown}, missing {missing}"
        )
    _record_metric(family, value, tuple(label_values[label] for label in family.labels))


@_guarded
def _record_metric(family: catalogue.Family, value: float, values: tuple[Any, ...]) -> None:
    if family.kind in (Kind.COUNTER, Kind.HISTOGRAM):
        number = _bounded(value, "value")
    else:  # a gauge may go below zero, not beyond the bound either way
        magnitude = _bounded(abs(value) if isinstance(value, int | float) else value, "value")
        number = math.copysign(magnitude, value)
    child = _child(family.name, values)
    if family.kind is Kind.COUNTER:
        child.inc(number)
    elif family.kind is Kind.HISTOGRAM:
        child.observe(number)
    else:
        child.set(number)


@_guarded
def issue_processed(
    *,
    provider: str,
    platform: str,
    issue_type: str,
    outcome: str,
    complexity: str = "unknown",
    duration_seconds: float | None = None,
) -> None:
    """An issue reached a terminal status; the duration is started -> completed."""
    duration = None if duration_seconds is None else _bounded(duration_seconds, "span_seconds")
    count = _row_child("issues_processed_total", (provider, platform, issue_type, outcome))
    timing = None
    if duration is not None:
        timing = _row_child(
            "issue_completion_duration_seconds", (provider, platform, issue_type, complexity)
        )
    count.inc()
    if timing is not None and duration is not None:
        timing.observe(duration)


@_guarded
def pr_created(*, provider: str, platform: str, issue_type: str, actor: str) -> None:
    """A pull request was opened by the system or a user."""
    _row_child("prs_created_total", (provider, platform, issue_type, actor)).inc()


@_guarded
def pr_merged(*, provider: str, platform: str, issue_type: str, merge_strategy: str) -> None:
    """A pull request was merged."""
    _row_child("prs_merged_total", (provider, platform, issue_type, merge_strategy)).inc()


@_guarded
def escalation(*, escalation_type: str, severity: str, component: str, reason: str) -> None:
    """An agent escalated to a person."""
    _row_child("escalations_total", (escalation_type, severity, component, reason)).inc()


@_guarded
def approval_decided(*, approval_type: str, outcome: str, wait_seconds: float) -> None:
    """An approval request was decided (approved, rejected or expired)."""
    _row_child("approval_wait_duration_seconds", (approval_type, outcome)).observe(
        _bounded(wait_seconds, "wait_seconds", "span_seconds")
    )


@_guarded
def deployment_finished(*, platform: str, environment: str, outcome: str) -> None:
    """A deployment succeeded, failed or was rolled back."""
    _row_child("deployments_total", (platform, environment, outcome)).inc()


@_guarded
def pr_stage(*, platform: str, stage: str, seconds: float) -> None:
    """A pull request left a stage (coding, pickup, review, merge, deploy)."""
    _row_child("pr_stage_duration_seconds", (platform, stage)).observe(
        _bounded(seconds, "seconds", "span_seconds")
    )


@_guarded
def change_deployed(*, platform: str, lead_time_seconds: float) -> None:
    """A change reached production for the first time, this long after its first commit."""
    _row_child("change_lead_time_seconds", (platform,)).observe(
        _bounded(lead_time_seconds, "lead_time_seconds", "span_seconds")
    )


@_guarded
def incident_opened(*, severity: str) -> None:
    """An incident opened: a failure in production."""
    _row_child("incidents_total", (severity,)).inc()


@_guarded
def incident_resolved(*, platform: str, severity: str, recovery_seconds: float) -> None:
    """An incident was resolved, ``recovery_seconds`` after it opened."""
    _row_child("failed_deployment_recovery_seconds", (platform, severity)).observe(
        _bounded(recovery_seconds, "recovery_seconds", "span_seconds")
    )


@_guarded
def ai_request(
    *,
    provider: str,
    model: str,
    request_type: str,
    outcome: str,
    duration_seconds: float,
    tokens: Mapping[str, int] | None = None,
    cost_usd: float | None = None,
) -> None:
    """An AI request finished: count, latency, tokens by type and cost."""
    duration = _bounded(duration_seconds, "duration_seconds")
    counts = {}
    for token_type, count in (tokens or {}).items():
        if token_type not in TOKEN_TYPES:
            raise Rejected(f"unknown token type {token_type!r}; known: {', '.join(TOKEN_TYPES)}")
        counts[token_type] = int(
            _bounded(_whole(count, token_type), f"{token_type} tokens", "tokens")
        )
    cost = None if cost_usd is None else _bounded(cost_usd, "cost_usd")

    requests = _child("ai_requests_total", (provider, model, request_type, outcome))
    total = sum(counts.values())
    latency = _child(
        "ai_request_duration_seconds", (provider, model, request_type, catalogue.token_range(total))
    )
    used = [
        (_child("ai_tokens_total", (provider, model, token_type)), count)
        for token_type, count in counts.items()
        if count
    ]
    spent = _child("ai_cost_usd_total", (provider, model)) if cost else None
    requests.inc()
    latency.observe(duration)
    for series, count in used:
        series.inc(count)
    if spent is not None and cost:
        spent.inc(cost)


@_guarded
def test_execution(
    *, test_type: str, framework: str, language: str, result: str, duration_seconds: float
) -> None:
    """A test run finished."""
    _child("test_execution_duration_seconds", (test_type, framework, language, result)).observe(
        _bounded(duration_seconds, "duration_seconds")
    )


@_guarded
def code_generation(
    *, provider: str, language: str, complexity: str, file_count: int, duration_seconds: float
) -> None:
    """An agent generated code; ``file_count`` is bucketed so it stays a bounded label."""
    files = int(_bounded(_whole(file_count, "file_count"), "file_count"))
    duration = _bounded(duration_seconds, "duration_seconds")
    _child(
        "code_generation_duration_seconds",
        (provider, language, complexity, catalogue.file_count_range(files)),
    ).observe(duration)


@_guarded
def code_change(
    *, change_type: str, language: str, actor: str, file_type: str, count: int = 1
) -> None:
    """Files were created, updated or deleted."""
    number = int(_bounded(_whole(count, "count"), "count"))
    _child("code_changes_total", (change_type, language, actor, file_type)).inc(number)


@_guarded
def api_response(
    *, endpoint: str, method: str, status_code: int | str, user_type: str, duration_seconds: float
) -> None:
    """A view answered; ``endpoint`` is the URL route name, never the raw path."""
    _child("api_response_duration_seconds", (endpoint, method, status_code, user_type)).observe(
        _bounded(duration_seconds, "duration_seconds")
    )


@_guarded
def connection_opened(*, connection_type: str, provider: str) -> None:
    """A connection to a provider or platform opened (pair with ``connection_closed``)."""
    _child("active_connections", (connection_type, provider)).inc()


@_guarded
def connection_closed(*, connection_type: str, provider: str) -> None:
    """A connection opened with ``connection_opened`` closed."""
    _child("active_connections", (connection_type, provider)).dec()


@contextmanager
def track_connection(*, connection_type: str, provider: str) -> Iterator[None]:
    """Count a connection as active for the duration of the block."""
    connection_opened(connection_type=connection_type, provider=provider)
    try:
        yield
    finally:
        connection_closed(connection_type=connection_type, provider=provider)


class Timer:
    """Times a block and records it on exit; the block may set attributes first.

    ``outcome`` becomes ``failure`` when the block raises and ``timeout`` on
    ``TimeoutError``; the exception always propagates.
    """

    def __init__(self, emit: Callable[[Timer], None], **labels_: Any) -> None:
        self._emit = emit
        self.labels = labels_
        self.outcome: str = SUCCESS
        self.tokens: Mapping[str, int] | None = None
        self.cost_usd: float | None = None
        self.file_count: int = 0
        self.duration_seconds: float = 0.0
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.duration_seconds = time.perf_counter() - self._start
        if exc_type is not None and issubclass(exc_type, TimeoutError):
            self.outcome = TIMEOUT
        elif exc_type is not None and issubclass(exc_type, Exception):
            self.outcome = FAILURE
        self._emit(self)


def time_ai_request(*, provider: str, model: str, request_type: str) -> Timer:
    """Time an AI request; set ``tokens`` and ``cost_usd`` on the timer inside the block."""
    return Timer(
        lambda t: ai_request(
            **t.labels,
            outcome=t.outcome,
            duration_seconds=t.duration_seconds,
            tokens=t.tokens,
            cost_usd=t.cost_usd,
        ),
        provider=provider,
        model=model,
        request_type=request_type,
    )


def time_test_execution(*, test_type: str, framework: str, language: str) -> Timer:
    """Time a test run; its ``result`` label is the timer's outcome."""
    return Timer(
        lambda t: test_execution(**t.labels, result=t.outcome, duration_seconds=t.duration_seconds),
        test_type=test_type,
        framework=framework,
        language=language,
    )


def time_code_generation(*, provider: str, language: str, complexity: str) -> Timer:
    """Time code generation; set ``file_count`` on the timer inside the block."""
    return Timer(
        lambda t: code_generation(
            **t.labels, file_count=t.file_count, duration_seconds=t.duration_seconds
        ),
        provider=provider,
        language=language,
        complexity=complexity,
    )
