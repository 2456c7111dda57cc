"""THE catalogue of metric families. Every other module reads it; none defines a family.

Names here carry no prefix; ``full_name`` adds the configured one (default ``tamma_``).
Label names never include titles, people's names, emails or secrets: label values
are aggregated in Prometheus forever, so only bounded vocabularies belong there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured

from .conf import app_settings, on_reset

__all__ = [
    "Audience",
    "ERROR_STAGES",
    "EVERYTHING",
    "FAMILIES",
    "FAMILY_VOCABULARIES",
    "FORBIDDEN_LABELS",
    "Family",
    "Kind",
    "LABEL_NAME",
    "METRIC_NAME",
    "MultiprocessMode",
    "RESERVED_LABELS",
    "RUNTIME_PATTERNS",
    "Source",
    "TOKEN_TYPES",
    "VALUE_CAPS",
    "VOCABULARIES",
    "Visibility",
    "WEBHOOK_OUTCOMES",
    "build",
    "choices",
    "families",
    "file_count_range",
    "get",
    "owner_of",
    "token_range",
]


class Kind(StrEnum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"


class Source(StrEnum):
    EVENT = "event"  # recorded through tamma_metrics.record, stored per process
    DATABASE = "database"  # computed by a query at scrape time
    PROCESS = "process"  # in-process state (connections) or constants (build info)
    SELF = "self"  # the metrics layer watching itself


class Audience(StrEnum):
    BUSINESS = "business"  # velocity, quality and cost: what a product manager reads
    OPERATIONS = "operations"  # system health: what an operator reads


# prometheus_client's Gauge modes, or "" for a family that is no gauge.
MultiprocessMode = Literal[
    "",
    "all",
    "liveall",
    "min",
    "livemin",
    "max",
    "livemax",
    "sum",
    "livesum",
    "mostrecent",
    "livemostrecent",
]


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    source: Source = Source.EVENT
    audience: Audience = Audience.OPERATIONS
    # Multiprocess aggregation of a gauge recorded in-process.
    multiprocess_mode: MultiprocessMode = ""
    custom: bool = False  # declared by the host project in CUSTOM_FAMILIES
    # Computed at each scrape (build info, the scrape's own figures), never recorded.
    # Database families always are.
    computed: bool = False

    @property
    def stored(self) -> bool:
        """Recorded per process (an instrument, a multiprocess file), not computed."""
        return self.source is not Source.DATABASE and not self.computed

    @property
    def unit(self) -> str:
        """The unit its name ends in (Prometheus naming): ``seconds``, or empty."""
        return "seconds" if self.metric_name.endswith("_seconds") else ""

    @property
    def full_name(self) -> str:
        """The exposed name, e.g. ``tamma_issues_processed_total``."""
        return f"{app_settings.PREFIX}{self.name}"

    @property
    def metric_name(self) -> str:
        """The family name as prometheus_client reports it (counters drop ``_total``)."""
        full = self.full_name
        if self.kind is Kind.COUNTER and full.endswith("_total"):
            return full[: -len("_total")]
        return full


B = Audience.BUSINESS

FAMILIES: tuple[Family, ...] = (
    # -- counters -------------------------------------------------------------------
    Family(
        "issues_processed_total",
        Kind.COUNTER,
        "Issues that reached a terminal status (success, failure or timeout).",
        ("provider", "platform", "issue_type", "outcome"),
        audience=B,
    ),
    Family(
        "prs_created_total",
        Kind.COUNTER,
        "Pull requests opened, by who opened them (system or user).",
        ("provider", "platform", "issue_type", "actor"),
        audience=B,
    ),
    Family(
        "prs_merged_total",
        Kind.COUNTER,
        "Pull requests merged, by merge strategy.",
        ("provider", "platform", "issue_type", "merge_strategy"),
        audience=B,
    ),
    Family(
        "escalations_total",
        Kind.COUNTER,
        "Escalations from the agents to people.",
        ("escalation_type", "severity", "component", "reason"),
        audience=B,
    ),
    Family(
        "deployments_total",
        Kind.COUNTER,
        "Deployments by outcome: success when one succeeded (deployment frequency), "
        "rolled_back when a deployment was rolled back, failure when one failed.",
        ("platform", "environment", "outcome"),
        audience=B,
    ),
    Family(
        "incidents_total",
        Kind.COUNTER,
        "Incidents opened (failures in production).",
        ("severity",),
        audience=B,
    ),
    Family(
        "ai_requests_total",
        Kind.COUNTER,
        "Requests made to AI providers, by outcome.",
        ("provider", "model", "request_type", "outcome"),
    ),
    Family(
        "ai_tokens_total",
        Kind.COUNTER,
        "Tokens consumed by AI requests, by token type.",
        ("provider", "model", "token_type"),
    ),
    Family(
        "ai_cost_usd_total",
        Kind.COUNTER,
        "Cost of AI requests in US dollars, as reported by the caller.",
        ("provider", "model"),
        audience=B,
    ),
    Family(
        "code_changes_total",
        Kind.COUNTER,
        "Files created, updated or deleted by the agents or by people.",
        ("change_type", "language", "actor", "file_type"),
    ),
    # -- histograms -----------------------------------------------------------------
    Family(
        "issue_completion_duration_seconds",
        Kind.HISTOGRAM,
        "Time from starting work on an issue to its terminal status.",
        ("provider", "platform", "issue_type", "complexity"),
        (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800),
        audience=B,
    ),
    Family(
        "ai_request_duration_seconds",
        Kind.HISTOGRAM,
        "Latency of AI provider requests.",
        ("provider", "model", "request_type", "token_range"),
        (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
    ),
    Family(
        "test_execution_duration_seconds",
        Kind.HISTOGRAM,
        "Duration of test runs.",
        ("test_type", "framework", "language", "result"),
        (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    ),
    Family(
        "code_generation_duration_seconds",
        Kind.HISTOGRAM,
        "Time the agents spent generating code.",
        ("provider", "language", "complexity", "file_count"),
        (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800),
    ),
    Family(
        "approval_wait_duration_seconds",
        Kind.HISTOGRAM,
        "Time from an approval request to its decision.",
        ("approval_type", "outcome"),
        (60, 300, 900, 3600, 14400, 28800, 86400, 259200, 604800),
        audience=B,
    ),
    Family(
        "change_lead_time_seconds",
        Kind.HISTOGRAM,
        "Time from a change's first commit to its first production deployment (DORA).",
        ("platform",),
        # DORA's band edges: an hour, a day, a week, a month, six months.
        (3600, 86400, 604800, 2592000, 15552000),
        audience=B,
    ),
    Family(
        "pr_stage_duration_seconds",
        Kind.HISTOGRAM,
        "Time a pull request spent in each stage: coding, pickup, review, merge, deploy.",
        ("platform", "stage"),
        (300, 1800, 3600, 14400, 86400, 259200, 604800, 2592000),
        audience=B,
    ),
    Family(
        "failed_deployment_recovery_seconds",
        Kind.HISTOGRAM,
        "Time from an incident opening to its resolution (DORA's recovery time).",
        ("platform", "severity"),
        # DORA's band edges: an hour, a day, a week, a month, six months.
        (600, 1800, 3600, 14400, 86400, 259200, 604800, 2592000, 15552000),
        audience=B,
    ),
    Family(
        "api_response_duration_seconds",
        Kind.HISTOGRAM,
        "Response time of the site's views, by URL route name (never the raw path).",
        ("endpoint", "method", "status_code", "user_type"),
        (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
    ),
    # -- gauges computed from the database at scrape time ---------------------------
    Family(
        "active_autonomous_loops",
        Kind.GAUGE,
        "Autonomous loops running with a recent heartbeat.",
        ("mode", "environment"),
        source=Source.DATABASE,
    ),
    Family(
        "pending_approvals",
        Kind.GAUGE,
        "Approval requests waiting for a decision.",
        ("approval_type", "priority"),
        source=Source.DATABASE,
        audience=B,
    ),
    Family(
        "queue_depth",
        Kind.GAUGE,
        "Work items queued and not yet started.",
        ("queue_type", "priority"),
        source=Source.DATABASE,
    ),
    Family(
        "approval_oldest_pending_timestamp_seconds",
        Kind.GAUGE,
        "Unix time of the oldest pending approval request; no series for a type with none.",
        ("approval_type",),
        source=Source.DATABASE,
        audience=B,
    ),
    # -- process state --------------------------------------------------------------
    Family(
        "active_connections",
        Kind.GAUGE,
        "Open connections to providers and platforms, summed over live processes.",
        ("connection_type", "provider"),
        source=Source.PROCESS,
        multiprocess_mode="livesum",
    ),
    Family(
        "build_info",
        Kind.GAUGE,
        "Version and environment of the metrics app; always 1.",
        ("version", "environment"),
        source=Source.PROCESS,
        computed=True,
    ),
    # -- self-metrics ---------------------------------------------------------------
    Family(
        "metrics_collector_up",
        Kind.GAUGE,
        "1 when the scrape-time collector answered in this scrape, else 0; "
        'collector="folder": 0 when the multiprocess folder could not be read or cannot '
        "take new metrics (full or read-only), so events may be lost.",
        ("collector",),
        source=Source.SELF,
        computed=True,
    ),
    Family(
        "metrics_collector_duration_seconds",
        Kind.GAUGE,
        "Time the scrape-time collector took in this scrape.",
        ("collector",),
        source=Source.SELF,
        computed=True,
    ),
    Family(
        "metrics_label_overflow_total",
        Kind.COUNTER,
        "Events recorded in a family's overflow series because its series cap was reached.",
        ("family",),
        source=Source.SELF,
    ),
    Family(
        "metrics_label_folds_total",
        Kind.COUNTER,
        "Label values replaced by the fold value (other) because the label policy refused them.",
        ("family", "label"),
        source=Source.SELF,
    ),
    Family(
        "metrics_label_redactions_total",
        Kind.COUNTER,
        "Label values recorded as redacted because they looked like personal data or a secret.",
        ("family", "label"),
        source=Source.SELF,
    ),
    Family(
        "metrics_webhook_deliveries_total",
        Kind.COUNTER,
        "Webhook deliveries by outcome: applied (a row changed), unchanged, stale (older "
        "than the rows), conflict (contradicts the rows; nothing written), duplicate (a "
        "redelivery), ignored (not tracked) or rejected (bad signature or body).",
        ("platform", "outcome"),
        source=Source.SELF,
    ),
    Family(
        "metrics_backend_errors_total",
        Kind.COUNTER,
        "Events a push backend could not take (send failed, or its queue was full).",
        ("backend",),
        source=Source.SELF,
    ),
    Family(
        "metrics_series",
        Kind.GAUGE,
        "Label combinations admitted per family.",
        ("family",),
        source=Source.SELF,
        computed=True,
    ),
    Family(
        "metrics_multiprocess_files",
        Kind.GAUGE,
        "Files of the multiprocess folder merged in this scrape (live processes and archives).",
        source=Source.SELF,
        computed=True,
    ),
    Family(
        "metrics_multiprocess_skipped_files",
        Kind.GAUGE,
        "Files of the multiprocess folder left out of this scrape: empty, foreign or unreadable.",
        source=Source.SELF,
        computed=True,
    ),
    Family(
        "metrics_errors_total",
        Kind.COUNTER,
        "Failures inside the metrics code, logged and swallowed so callers never see them.",
        ("stage",),
        source=Source.SELF,
    ),
)

# Bounded label values derived from numbers, so a raw count never becomes a label.
TOKEN_RANGES: tuple[tuple[int, str], ...] = (
    (1_000, "0-1k"),
    (10_000, "1k-10k"),
    (100_000, "10k-100k"),
)
TOKEN_RANGE_MAX = "100k+"

FILE_COUNT_RANGES: tuple[tuple[int, str], ...] = ((0, "0"), (1, "1"), (5, "2-5"), (20, "6-20"))
FILE_COUNT_MAX = "21+"


# -- label vocabularies: the one source of every label's allowed values --------------
#
# Closed labels: value -> how people read it. The models' choices, the default label
# policies (seeded into LabelPolicy, then editable in the admin), the ingest API and the
# demo data all derive from these.
VOCABULARIES: dict[str, dict[str, str]] = {
    "provider": {
        "anthropic": "Anthropic",
        "openai": "OpenAI",
        "google": "Google",
        "azure_openai": "Azure OpenAI",
        "aws_bedrock": "AWS Bedrock",
        "mistral": "Mistral",
        "local": "Local model",
    },
    "platform": {
        "github": "GitHub",
        "gitlab": "GitLab",
        "gitea": "Gitea",
        "bitbucket": "Bitbucket",
        "azure_devops": "Azure DevOps",
    },
    "issue_type": {
        "feature": "Feature",
        "bug": "Bug",
        "refactor": "Refactor",
        "documentation": "Documentation",
        "test": "Test",
        "chore": "Chore",
    },
    "outcome": {"success": "Success", "failure": "Failure", "timeout": "Timeout"},
    "result": {"success": "Success", "failure": "Failure", "timeout": "Timeout"},
    "severity": {"low": "Low", "medium": "Medium", "high": "High", "critical": "Critical"},
    "priority": {"low": "Low", "medium": "Medium", "high": "High", "critical": "Critical"},
    "actor": {"system": "System", "user": "User"},
    "merge_strategy": {
        "merge": "Merge commit",
        "squash": "Squash",
        "rebase": "Rebase",
        "unknown": "Unknown",  # the platform did not say (GitHub's webhooks never do)
    },
    "token_type": {
        "input": "Input",
        "output": "Output",
        "cache_read": "Cache read",
        "cache_write": "Cache write",
    },
    "complexity": {"low": "Low", "medium": "Medium", "high": "High", "unknown": "Unknown"},
    "escalation_type": {
        "blocked": "Blocked",
        "ambiguous_requirements": "Ambiguous requirements",
        "test_failure": "Test failure",
        "permission": "Permission needed",
        "budget": "Budget exceeded",
        "safety": "Safety concern",
    },
    "change_type": {"create": "Create", "update": "Update", "delete": "Delete"},
    "stage": {
        "coding": "Coding",
        "pickup": "Pickup",
        "review": "Review",
        "merge": "Merge",
        "deploy": "Deploy",
    },
    "approval_type": {
        "plan": "Plan",
        "code_review": "Code review",
        "merge": "Merge",
        "deployment": "Deployment",
    },
    "method": {
        m: m.upper() for m in ("get", "head", "post", "put", "patch", "delete", "options", "other")
    },
    "user_type": {"anonymous": "Anonymous", "user": "User", "staff": "Staff", "service": "Service"},
    "token_range": {label: label for _, label in TOKEN_RANGES} | {TOKEN_RANGE_MAX: TOKEN_RANGE_MAX},
    "file_count": {label: label for _, label in FILE_COUNT_RANGES}
    | {FILE_COUNT_MAX: FILE_COUNT_MAX},
}
# Free-form labels: how many distinct values each admits before folding to ``other``.
VALUE_CAPS: dict[str, int] = {
    "model": 100,
    "reason": 100,
    "component": 50,
    "language": 50,
    "file_type": 50,
    "framework": 50,
    "request_type": 20,
    "test_type": 20,
    "connection_type": 20,
    "endpoint": 200,
    "status_code": 60,
}
# The closed label values of self-metric counters, which start at 0 (instruments.zero_series):
# the stages of metrics_errors_total (selfmetrics.count_error) and the webhook outcomes.
# "disk": an event lost because the multiprocess folder is full or read-only.
ERROR_STAGES: tuple[str, ...] = ("disk", "receiver", "record", "rejected")
WEBHOOK_OUTCOMES: tuple[str, ...] = (
    "applied",
    "unchanged",
    "stale",
    "conflict",
    "duplicate",
    "ignored",
    "rejected",
)
# A family whose label differs from the label's general rule: a vocabulary or a cap.
FAMILY_VOCABULARIES: dict[tuple[str, str], tuple[str, ...] | int] = {
    ("approval_wait_duration_seconds", "outcome"): ("approved", "rejected", "expired"),
    ("deployments_total", "outcome"): ("success", "failure", "rolled_back"),
    ("metrics_webhook_deliveries_total", "outcome"): WEBHOOK_OUTCOMES,
    # Environments are the team's own names (production, staging, preview-1, ...).
    ("deployments_total", "environment"): 20,
    # Connections go to AI providers and to platforms such as GitHub.
    ("active_connections", "provider"): 30,
}
TOKEN_TYPES: tuple[str, ...] = tuple(VOCABULARIES["token_type"])


def choices(label: str, *, only: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(value, display) pairs of a closed label, for a model field's ``choices``;
    ``only`` keeps some of them (a model that never takes every value)."""
    vocabulary = VOCABULARIES[label]
    return [(value, vocabulary[value]) for value in only or vocabulary]


# Label names that would carry personal data or secrets: never allowed, also not in
# custom families. Prometheus keeps label values forever and shows them to every viewer.
FORBIDDEN_LABELS = frozenset(
    {
        "title",
        "name",
        "user",
        "username",
        "email",
        "token",
        "password",
        "secret",
        "author",
        "assignee",
        "ip",
    }
)
RESERVED_LABELS = frozenset({"le", "quantile"})
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _custom_family(spec: Any) -> Family:
    """A host project's family from settings, validated with errors that name the field."""
    if not isinstance(spec, dict):
        raise ImproperlyConfigured(f"CUSTOM_FAMILIES entries must be dicts, got {spec!r}")
    unknown = set(spec) - {"name", "type", "help", "labels", "buckets", "audience"}
    name = spec.get("name")
    where = f"CUSTOM_FAMILIES[{name!r}]"
    if unknown:
        raise ImproperlyConfigured(f"{where}: unknown keys {sorted(unknown)}")
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise ImproperlyConfigured(f"{where}: name must be a metric name")
    try:
        kind = Kind(spec.get("type", ""))
    except ValueError:
        raise ImproperlyConfigured(f"{where}: type must be counter, histogram or gauge") from None
    if (kind is Kind.COUNTER) != name.endswith("_total"):
        raise ImproperlyConfigured(f"{where}: counters, and only counters, end in _total")
    labels = tuple(spec.get("labels", ()))
    for label in labels:
        if not isinstance(label, str) or not LABEL_NAME.match(label) or label.startswith("__"):
            raise ImproperlyConfigured(f"{where}: {label!r} is not a label name")
        if label in FORBIDDEN_LABELS | RESERVED_LABELS:
            raise ImproperlyConfigured(
                f"{where}: label {label!r} is not allowed (personal data or reserved)"
            )
    if len(set(labels)) != len(labels):
        raise ImproperlyConfigured(f"{where}: labels repeat")
    buckets = tuple(float(b) for b in spec.get("buckets", ()))
    if kind is Kind.HISTOGRAM and (not buckets or list(buckets) != sorted(set(buckets))):
        raise ImproperlyConfigured(f"{where}: histograms need increasing buckets")
    if not spec.get("help"):
        raise ImproperlyConfigured(f"{where}: help is required")
    return Family(
        name,
        kind,
        str(spec["help"]),
        labels,
        buckets,
        audience=Audience(spec.get("audience", Audience.BUSINESS.value)),
        # A host gauge is set, not added to: the latest value of any process wins.
        multiprocess_mode="mostrecent" if kind is Kind.GAUGE else "",
        custom=True,
    )


def build(custom_families: Any) -> tuple[Family, ...]:
    """The built-in families plus ``custom_families`` (the ``CUSTOM_FAMILIES`` setting);
    ImproperlyConfigured names the entry at fault."""
    custom = tuple(_custom_family(spec) for spec in custom_families)
    clash = {f.name for f in custom} & {f.name for f in FAMILIES}
    if clash:
        raise ImproperlyConfigured(f"CUSTOM_FAMILIES redefine built-in families: {clash}")
    return FAMILIES + custom


_families: tuple[Family, ...] | None = None


def families() -> tuple[Family, ...]:
    """The built-in families plus the host project's ``CUSTOM_FAMILIES``."""
    global _families
    if _families is None:
        _families = build(app_settings.CUSTOM_FAMILIES)
    return _families


@on_reset
def _forget_custom_families() -> None:
    global _families
    _families = None


def get(name: str) -> Family:
    """Return the family called ``name`` (without prefix); KeyError names the unknown one."""
    for family in families():
        if family.name == name:
            return family
    raise KeyError(f"unknown metric family {name!r}")


def token_range(total_tokens: int) -> str:
    """Bucket a request's total token count into a label value."""
    for limit, label in TOKEN_RANGES:
        if total_tokens < limit:
            return label
    return TOKEN_RANGE_MAX


def file_count_range(count: int) -> str:
    """Bucket a number of generated files into a label value."""
    for limit, label in FILE_COUNT_RANGES:
        if count <= limit:
            return label
    return FILE_COUNT_MAX


# Families served beside the catalogue (django-prometheus, the process and platform
# collectors), covered by one permission row each.
RUNTIME_PATTERNS: dict[str, str] = {
    "django_*": "Request, response, database and cache metrics of django-prometheus.",
    "process_*": "CPU, memory and file descriptors of the process answering the scrape.",
    "python_*": "Python version and garbage collector of the process answering the scrape.",
}


def owner_of(metric_name: str) -> str | None:
    """The catalogue name or runtime pattern that covers an exposed family, if any."""
    for family in families():
        if family.metric_name == metric_name:
            return family.name
    for pattern in RUNTIME_PATTERNS:
        if metric_name.startswith(pattern[:-1]):
            return pattern
    return None


@dataclass(frozen=True)
class Visibility:
    """The families one caller may see (access decides, the scrape obeys): None families
    means everything."""

    families: frozenset[str] | None
    uncovered: bool  # families no MetricFamily row covers (superusers only)

    def allows(self, metric_name: str) -> bool:
        if self.families is None:
            return True
        owner = owner_of(metric_name)
        return self.uncovered if owner is None else owner in self.families

    def allows_family(self, name: str) -> bool:
        return self.families is None or name in self.families


EVERYTHING = Visibility(None, True)
