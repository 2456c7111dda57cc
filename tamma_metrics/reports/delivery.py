"""Delivery performance: the four DORA keys for a window of days and for the window
before it (the trend), each with its performance band, and the pull-request stages.

Windows are the last ``days`` × 24 hours up to now, and the same length before that.
Production deployments only (``environment="production"``):

- deployment frequency: deployments deployed (succeeded, or rolled back later) that
  finished in the window, per day;
- lead time for changes: median time from a pull request's first commit (its opening
  when the first commit is not known) to its first production deployment, over the pull
  requests deployed in the window;
- change failure rate: of the deployments that finished in the window, those that failed,
  were rolled back or caused an incident;
- failed deployment recovery time: median time from an incident opening to its
  resolution, over the incidents resolved in the window.

Bands (DORA's State of DevOps report, 2023), best first; a key with no data has none:

| key | elite | high | medium | low |
|---|---|---|---|---|
| deployment frequency | at least daily | at least weekly | at least monthly | less often |
| lead time | under a day | under a week | under a month | a month or more |
| change failure rate | 5% or less | 10% or less | 15% or less | more |
| recovery time | under an hour | under a day | under a week | a week or more |

Every figure is computed by the database, in a constant number of queries whatever the
number of rows (11).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import Deployment, Incident, PullRequest
from .sql import percentiles, seconds_between

__all__ = ["BANDS", "FAMILIES", "STAGES", "WINDOWS", "band", "delivery"]

WINDOWS = (7, 30, 90)
# The families whose figures the report shows: a caller must see them all.
FAMILIES = (
    "deployments_total",
    "change_lead_time_seconds",
    "incidents_total",
    "failed_deployment_recovery_seconds",
    "pr_stage_duration_seconds",
)
HOUR, DAY = 3600.0, 86400.0
# key -> (direction, the elite, high and medium limits); "above": higher is better.
BANDS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "deployment_frequency": ("above", (1.0, 1 / 7, 1 / 30)),  # per day
    "lead_time_hours": ("below", (24.0, 7 * 24.0, 30 * 24.0)),
    "change_failure_rate": ("at_most", (0.05, 0.10, 0.15)),
    "recovery_time_hours": ("below", (1.0, 24.0, 7 * 24.0)),
}
NAMES = ("elite", "high", "medium")
STAGES = ("coding", "pickup", "review", "merge", "deploy")


def band(key: str, value: float | None) -> str | None:
    """The DORA performance band of ``value`` for ``key``; None without a value."""
    if value is None:
        return None
    direction, limits = BANDS[key]
    for name, limit in zip(NAMES, limits, strict=True):
        if (
            (direction == "above" and value >= limit)
            or (direction == "below" and value < limit)
            or (direction == "at_most" and value <= limit)
        ):
            return name
    return "low"


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / HOUR, 3)


def _keys(start: datetime, end: datetime, days: int) -> dict[str, Any]:
    finished = Deployment.objects.filter(
        environment=Deployment.PRODUCTION, finished_at__gte=start, finished_at__lt=end
    )
    caused = Incident.objects.filter(deployment=OuterRef("pk"))
    counts = finished.annotate(incident=Exists(caused)).aggregate(
        finished=Count("pk"),
        deployed=Count("pk", filter=Q(status__in=Deployment.DEPLOYED)),
        failed=Count("pk", filter=Q(status__in=Deployment.FINAL) | Q(incident=True)),
    )
    shipped = PullRequest.objects.filter(deployed_at__gte=start, deployed_at__lt=end).annotate(
        first=Coalesce("first_commit_at", "created_at")
    )
    lead = percentiles(shipped, seconds_between("first", "deployed_at"), Value(1), (50,))
    resolved = Incident.objects.filter(resolved_at__gte=start, resolved_at__lt=end)
    recovery = percentiles(resolved, seconds_between("opened_at", "resolved_at"), Value(1), (50,))
    frequency = counts["deployed"] / days
    failure = counts["failed"] / counts["finished"] if counts["finished"] else None
    lead_hours = _hours(lead.get(1, {}).get("p50"))
    recovery_hours = _hours(recovery.get(1, {}).get("p50"))
    figures = {
        "deployment_frequency": round(frequency, 4) if counts["deployed"] else None,
        "lead_time_hours": lead_hours,
        "change_failure_rate": None if failure is None else round(failure, 4),
        "recovery_time_hours": recovery_hours,
    }
    return {
        "deployments": counts["deployed"],
        "deployments_finished": counts["finished"],
        "failed_deployments": counts["failed"],
        "changes_deployed": lead.get(1, {}).get("n", 0),
        "incidents_resolved": recovery.get(1, {}).get("n", 0),
        **{key: {"value": value, "band": band(key, value)} for key, value in figures.items()},
    }


def _stages(start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Median and 95th percentile hours of each stage, over the pull requests merged in
    the window (deploy: deployed in it), one query per stage."""
    merged = PullRequest.objects.filter(merged_at__gte=start, merged_at__lt=end).annotate(
        ready=Coalesce("ready_at", "created_at"),
        reviewed=Coalesce("approved_at", "merged_at"),
    )
    spans = {
        "coding": (merged, "first_commit_at", "ready"),
        "pickup": (merged, "ready", "first_review_at"),
        "review": (merged, "first_review_at", "reviewed"),
        "merge": (merged, "approved_at", "merged_at"),
        "deploy": (
            PullRequest.objects.filter(deployed_at__gte=start, deployed_at__lt=end),
            "merged_at",
            "deployed_at",
        ),
    }
    rows = []
    for stage, (queryset, begin, finish) in spans.items():
        found = percentiles(
            queryset.filter(**{f"{begin}__isnull": False, f"{finish}__isnull": False}),
            seconds_between(begin, finish),
            Value(1),
        ).get(1, {})
        rows.append(
            {
                "stage": stage,
                "pull_requests": found.get("n", 0),
                "p50_hours": _hours(found.get("p50")),
                "p95_hours": _hours(found.get("p95")),
            }
        )
    return rows


def delivery(days: int, now: datetime | None = None) -> dict[str, Any]:
    """The delivery report for the last ``days`` days and the ``days`` before them."""
    if days not in WINDOWS:
        raise ValueError(f"days must be one of {', '.join(map(str, WINDOWS))}")
    end = now or timezone.now()
    start = end - timedelta(days=days)
    before = start - timedelta(days=days)
    return {
        "window": {"days": days, "since": start.isoformat(), "until": end.isoformat()},
        "previous_window": {"since": before.isoformat(), "until": start.isoformat()},
        "keys": _keys(start, end, days),
        "previous_keys": _keys(before, start, days),
        "stages": _stages(start, end),
        "bands": {
            key: dict(zip(NAMES, limits, strict=True)) | {"direction": direction}
            for key, (direction, limits) in BANDS.items()
        },
    }
