"""Velocity and quality over a window of days, from the domain models: what a product
manager reads first. The velocity page and ``GET /api/v1/velocity`` both call
``velocity()``, so they cannot disagree.

Every figure is an aggregate computed by the database (grouped by day, by 7-day week or
by a label; percentiles with window functions), in a constant number of queries
whatever the number of rows. Days are calendar days in the site's ``TIME_ZONE``; the
window is the last ``days`` of them, today included; weeks are 7-day buckets from the
window's first day, and the last one, which holds today, is ``partial`` (not over; with
fewer than 7 days when ``days`` is not a multiple of 7). Percentiles are nearest-rank.
Durations are in hours (the pages show them in minutes, hours or days by size).

- completed: issues that reached a terminal outcome (succeeded, failed, timed out) in the
  window; cancelled issues are not completed;
- cycle time: started to completed; lead time: created to completed;
- first-time-merge rate: of the completed issues that have pull requests, those whose
  first pull request was merged;
- autonomy rate: of the completed issues, those no escalation was raised for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import (
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Floor
from django.utils import timezone

from .. import catalogue
from ..models import Approval, Escalation, Issue, PullRequest
from . import cache as report_cache
from .sql import day_index, offsets, percentiles, seconds_between

__all__ = ["FAMILIES", "WINDOWS", "FilterError", "Filters", "cached", "velocity"]

WINDOWS = (7, 30, 90)
# The families whose figures the report shows: a caller must see them all.
FAMILIES = (
    "issues_processed_total",
    "issue_completion_duration_seconds",
    "prs_created_total",
    "prs_merged_total",
    "escalations_total",
    "approval_wait_duration_seconds",
)
OUTCOME_OF_STATUS = {str(status): outcome for status, outcome in Issue.OUTCOMES.items()}
HOUR = 3600.0


class FilterError(ValueError):
    """A filter value the report does not take; ``field`` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Filters:
    days: int = 30
    provider: str = ""
    platform: str = ""
    issue_type: str = ""

    @classmethod
    def parse(cls, params: Any) -> Filters:
        """From query parameters (a QueryDict or a dict of strings); FilterError names
        the parameter at fault."""
        unknown = sorted(set(params) - {"days", "provider", "platform", "issue_type"})
        if unknown:
            raise FilterError(unknown[0], f"Unknown parameter; use days, {_LABELS}.")
        raw_days = str(params.get("days") or "30")
        if raw_days not in {str(d) for d in WINDOWS}:
            raise FilterError("days", f"days must be one of {', '.join(map(str, WINDOWS))}.")
        values = {}
        for label in ("provider", "platform", "issue_type"):
            value = str(params.get(label) or "")
            if value and value not in catalogue.VOCABULARIES[label]:
                known = ", ".join(catalogue.VOCABULARIES[label])
                raise FilterError(label, f"{label} must be empty or one of: {known}.")
            values[label] = value
        return cls(days=int(raw_days), **values)

    def issue_filter(self, prefix: str = "") -> Q:
        """The filters on issues, or on the issue of a related row (``prefix``)."""
        return Q(
            **{
                f"{prefix}{label}": getattr(self, label)
                for label in ("provider", "platform", "issue_type")
                if getattr(self, label)
            }
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "provider": self.provider,
            "platform": self.platform,
            "issue_type": self.issue_type,
        }


_LABELS = "provider, platform, issue_type"


def _window(days: int, now: datetime) -> tuple[datetime, list[date]]:
    """The window's start (midnight, local time) and its days, oldest first."""
    today = timezone.localtime(now).date()
    first = today - timedelta(days=days - 1)
    start = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    return start, [first + timedelta(days=n) for n in range(days)]


def _hours(entry: dict[str, float] | None) -> dict[str, float | None]:
    entry = entry or {}
    return {
        "median": round(entry["p50"] / HOUR, 3) if "p50" in entry else None,
        "p95": round(entry["p95"] / HOUR, 3) if "p95" in entry else None,
        "count": int(entry.get("n", 0)),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def velocity(filters: Filters, now: datetime | None = None) -> dict[str, Any]:
    """Every velocity and quality figure for ``filters``; see the module docstring."""
    now = now or timezone.now()
    start, days = _window(filters.days, now)
    zone_offsets = offsets(start, now)  # the time zone over the window, for day buckets
    weeks = [days[n] for n in range(0, len(days), 7)]
    on_issue = filters.issue_filter()
    completed = Issue.objects.filter(
        on_issue,
        status__in=list(OUTCOME_OF_STATUS),
        completed_at__gte=start,
        completed_at__lte=now,
    )

    # Issues completed per day, by outcome and provider (1 query): the days, the weeks
    # (sums of their days) and the providers' counts all come from these rows.
    per_day = {day: dict.fromkeys(("success", "failure", "timeout"), 0) for day in days}
    by_provider: dict[str, dict[str, int]] = {}
    day_of = day_index("completed_at", start, zone_offsets)
    rows = (
        completed.order_by()
        .annotate(day=day_of)
        .values_list("day", "status", "provider")
        .annotate(n=Count("id"))
    )
    for day, status, provider, n in rows:
        if 0 <= day < len(days):
            per_day[days[int(day)]][OUTCOME_OF_STATUS[status]] += n
        counts = by_provider.setdefault(provider, {"issues": 0, "succeeded": 0})
        counts["issues"] += n
        if status == Issue.Status.SUCCEEDED:
            counts["succeeded"] += n
    throughput = []
    for index, week in enumerate(weeks):
        week_days = days[index * 7 : index * 7 + 7]
        throughput.append(
            {
                "week_start": week.isoformat(),
                "days": len(week_days),
                "completed": sum(sum(per_day[d].values()) for d in week_days),
                "succeeded": sum(per_day[d]["success"] for d in week_days),
                # The last week holds today, so it is not over: fewer completions than a
                # whole week's is not a drop.
                "partial": index == len(weeks) - 1,
            }
        )

    # Cycle and lead time per week: median and p95 (2 queries).
    bucket = Floor(day_of / Value(7))
    cycle = percentiles(completed, seconds_between("started_at", "completed_at"), bucket)
    lead = percentiles(completed, seconds_between("created_at", "completed_at"), bucket)
    cycle_weeks, lead_weeks = [], []
    for index, week in enumerate(weeks):
        cycle_weeks.append({"week_start": week.isoformat(), **_hours(cycle.get(index))})
        lead_weeks.append({"week_start": week.isoformat(), **_hours(lead.get(index))})

    # Pull requests opened and merged per day (2 queries), time to merge (1 query).
    prs = PullRequest.objects.filter(filters.issue_filter("issue__"))
    pr_days = {day: {"opened": 0, "merged": 0} for day in days}
    for key, field in (("opened", "created_at"), ("merged", "merged_at")):
        pr_rows = (
            prs.filter(**{f"{field}__gte": start, f"{field}__lte": now})
            .order_by()
            .annotate(day=day_index(field, start, zone_offsets))
            .values_list("day")
            .annotate(n=Count("id"))
        )
        for day, n in pr_rows:
            if 0 <= day < len(days):
                pr_days[days[int(day)]][key] += n
    merged = prs.filter(status=PullRequest.Status.MERGED, merged_at__gte=start, merged_at__lte=now)
    to_merge = percentiles(merged, seconds_between("created_at", "merged_at"), Value(0))

    # First-time merges and autonomy over the completed issues (1 query each).
    first_pr = PullRequest.objects.filter(issue=OuterRef("pk")).order_by("created_at", "pk")
    first = completed.annotate(first_status=Subquery(first_pr.values("status")[:1])).aggregate(
        with_prs=Count("id", filter=Q(first_status__isnull=False)),
        first_merged=Count("id", filter=Q(first_status=PullRequest.Status.MERGED)),
    )
    escalated = Escalation.objects.filter(issue=OuterRef("pk"))
    autonomy = completed.annotate(escalated=Exists(escalated)).aggregate(
        finished=Count("id"), autonomous=Count("id", filter=Q(escalated=False))
    )

    # Approval wait by type (1 query), escalations by severity and reason (1 query).
    decided = Approval.objects.filter(
        filters.issue_filter("issue__"), decided_at__gte=start, decided_at__lte=now
    ).exclude(status=Approval.Status.PENDING)
    waits = percentiles(decided, seconds_between("requested_at", "decided_at"), F("approval_type"))
    escalation_rows = (
        Escalation.objects.filter(
            filters.issue_filter("issue__"), created_at__gte=start, created_at__lte=now
        )
        .order_by()
        .values_list("severity", "reason")
        .annotate(n=Count("id"))
    )
    severities = list(catalogue.VOCABULARIES["severity"])
    escalations = sorted(
        ({"severity": s, "reason": r, "count": n} for s, r, n in escalation_rows),
        # A value outside the vocabulary (stored as other, or written by other means)
        # sorts after the known ones instead of failing the report.
        key=lambda row: (
            -(severities.index(row["severity"]) if row["severity"] in severities else -1),
            -row["count"],
            row["reason"],
        ),
    )

    # Providers compared (their counts above, 1 query for the cycle times).
    provider_cycle = percentiles(
        completed, seconds_between("started_at", "completed_at"), F("provider")
    )
    providers = [
        {
            "provider": provider,
            "issues": row["issues"],
            "success_rate": _rate(row["succeeded"], row["issues"]),
            "median_cycle_hours": _hours(provider_cycle.get(provider))["median"],
        }
        for provider, row in sorted(by_provider.items(), key=lambda item: -item[1]["issues"])
    ]

    total = sum(sum(day.values()) for day in per_day.values())
    return {
        "window": {
            **filters.as_dict(),
            "since": start.isoformat(),
            "until": now.isoformat(),
            "time_zone": timezone.get_current_timezone_name(),
        },
        "totals": {
            "completed": total,
            "succeeded": sum(day["success"] for day in per_day.values()),
            "success_rate": _rate(sum(day["success"] for day in per_day.values()), total),
            "prs_opened": sum(day["opened"] for day in pr_days.values()),
            "prs_merged": sum(day["merged"] for day in pr_days.values()),
        },
        "completed_per_day": [{"day": day.isoformat(), **per_day[day]} for day in days],
        "throughput_per_week": throughput,
        "cycle_time_hours": cycle_weeks,
        "lead_time_hours": lead_weeks,
        "pull_requests_per_day": [{"day": day.isoformat(), **pr_days[day]} for day in days],
        "time_to_merge_hours": _hours(to_merge.get(0)),
        "first_time_merge": {
            "issues_with_prs": first["with_prs"],
            "first_pr_merged": first["first_merged"],
            "rate": _rate(first["first_merged"], first["with_prs"]),
        },
        "autonomy": {
            "finished": autonomy["finished"],
            "without_escalation": autonomy["autonomous"],
            "rate": _rate(autonomy["autonomous"], autonomy["finished"]),
        },
        "approval_wait_hours": [
            {"approval_type": kind, **_hours(waits.get(kind))}
            for kind in catalogue.VOCABULARIES["approval_type"]
        ],
        "escalations": escalations,
        "providers": providers,
    }


def cached(filters: Filters) -> dict[str, Any]:
    """``velocity(filters)``, computed at most once per REPORTS_CACHE_SECONDS for the
    same filters and time zone in every process sharing the cache (the pages and the
    API use this; 0 turns the cache off)."""
    parameters = [str(value) for value in filters.as_dict().values()]
    return report_cache.remembered("velocity", parameters, lambda: velocity(filters))
