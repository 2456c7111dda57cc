"""Delivery performance: the four DORA keys for a window of days and for the window
before it (the trend), each with its performance band; the pull-request stages; where the
work waited for a person; and what the AI cost per change, by provider.

Days are calendar days in the current time zone (the site's ``TIME_ZONE``), as on the
velocity page: the window is the last ``days`` of them, today included, and the previous
window the ``days`` before it. Production deployments only (their tier, see docs/state.md):

- deployment frequency: deployments deployed (succeeded, or rolled back later) that
  finished in the window, per day;
- lead time for changes: median time from a pull request's first commit (its opening
  when the first commit is not known) to its first production deployment, over the pull
  requests deployed in the window (the changes);
- change failure rate: of the deployments that finished in the window, those that failed,
  were rolled back or caused an incident (by provider: of those that shipped a change of
  the provider's issues);
- failed deployment recovery time: median time from an incident opening to its
  resolution, over the incidents resolved in the window.

Beside the keys, for the window and the one before: the pull requests merged in it and the
reverts among them (``PullRequest.is_revert``), a quality signal. Nothing records which
change a revert undid, so the change it undid is not marked (it stays a good change unless
its deployment failed); the reverts are counted, not linked.

Bands (DORA's State of DevOps report, 2023), best first; a key with no data has none:

| key | elite | high | medium | low |
|---|---|---|---|---|
| deployment frequency | at least daily | at least weekly | at least monthly | less often |
| lead time | under a day | under a week | under a month | a month or more |
| change failure rate | 5% or less | 10% or less | 15% or less | more |
| recovery time | under an hour | under a day | under a week | a week or more |

Reviews, over the pull requests merged in the window: the median and 95th percentile of
their review rounds (reviews by people: the webhooks leave bots' reviews out), the share
on which a person requested changes, and their mean size (lines added and deleted, files
changed) over those whose size is known (files changed above 0).

Cost: an issue's AI cost (``Issue.cost_usd``) is shared equally by its pull requests; the
cost per change is what the changes of the window cost over their number, the cost per
good change the same over the good ones (deployed, and no production deployment that
shipped them failed, was rolled back or caused an incident).

Waiting for a person, over the issues completed in the window (started to completed):
approvals (requested to decided), reviews (a pull request's ready for review, or its
opening, to its approval, or its merge without one) and escalations (raised to answered,
or to the issue's end when never answered). Overlapping waits each count; an issue's wait
is at most its cycle time, and the rest is the agent working.

Every figure is computed by the database, in a constant number of queries whatever the
number of rows (15): the lead times and the merged pull requests of both windows are one
query each (grouped by window).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import (
    Case,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Least
from django.utils import timezone

from ..models import Approval, Deployment, Escalation, Incident, Issue, PullRequest
from . import cache
from .sql import day_index, offsets, percentiles, seconds_between
from .velocity import FilterError

__all__ = ["BANDS", "FAMILIES", "STAGES", "WINDOWS", "band", "cached", "delivery", "parse"]

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
COMPLETED = list(Issue.OUTCOMES)  # the statuses velocity counts as completed too


def parse(params: Any) -> int:
    """The window's days from query parameters; FilterError names the one at fault."""
    unknown = sorted(set(params) - {"days"})
    if unknown:
        raise FilterError(unknown[0], "Unknown parameter; use days.")
    raw = str(params.get("days") or "30")
    if raw not in {str(d) for d in WINDOWS}:
        raise FilterError("days", f"Must be one of {', '.join(map(str, WINDOWS))}.")
    return int(raw)


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


def _ratio(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, datetime.min.time()))


def _production(start: datetime | None = None, end: datetime | None = None) -> QuerySet:
    """Production deployments (that finished in [start, end)), with whether each failed:
    failed, rolled back or caused an incident."""
    caused = Incident.objects.filter(deployment=OuterRef("pk"))
    rows = Deployment.objects.filter(tier=Deployment.Tier.PRODUCTION)
    if start is not None:
        rows = rows.filter(finished_at__gte=start, finished_at__lt=end)
    return rows.annotate(incident=Exists(caused)).annotate(
        failure=Q(status__in=Deployment.FINAL) | Q(incident=True)
    )


def _current(field: str, start: datetime) -> Case:
    """1 for a row whose ``field`` is in the window (from ``start``), 0 for the one before."""
    return Case(
        When(**{f"{field}__gte": start}, then=Value(1)),
        default=Value(0),
        output_field=IntegerField(),
    )


def _flag(condition: Q) -> Case:
    """1 for a row matching ``condition``, else 0 (summed: how many match)."""
    return Case(When(condition, then=Value(1)), default=Value(0), output_field=IntegerField())


def _lead_times(before: datetime, start: datetime, end: datetime) -> dict[int, dict[str, float]]:
    """The changes' lead times of both windows (1 query): {1: this one, 0: the one before}."""
    shipped = PullRequest.objects.filter(deployed_at__gte=before, deployed_at__lt=end).annotate(
        first=Coalesce("first_commit_at", "created_at")
    )
    return percentiles(
        shipped, seconds_between("first", "deployed_at"), _current("deployed_at", start), (50,)
    )


def _merged(before: datetime, start: datetime, end: datetime) -> dict[int, dict[str, float]]:
    """The pull requests merged in both windows (1 query): {1: this one, 0: the one before},
    each with how many, their review rounds' median and 95th percentile, and the reverts,
    those with changes requested, those of a known size and their sizes among them."""
    merged = PullRequest.objects.filter(merged_at__gte=before, merged_at__lt=end)
    return percentiles(
        merged,
        F("review_rounds"),
        _current("merged_at", start),
        sums={
            "reverts": _flag(Q(is_revert=True)),
            "changes_requested": _flag(Q(changes_requested__gt=0)),
            "sized": _flag(Q(files_changed__gt=0)),
            "lines": F("additions") + F("deletions"),
            "files": F("files_changed"),
        },
    )


def _keys(
    start: datetime, end: datetime, days: int, lead: dict[str, float], merged: dict[str, float]
) -> dict[str, Any]:
    """The four keys of one window (2 queries), with its lead times and merged pull
    requests (from ``_lead_times`` and ``_merged``)."""
    counts = _production(start, end).aggregate(
        finished=Count("pk"),
        deployed=Count("pk", filter=Q(status__in=Deployment.DEPLOYED)),
        failed=Count("pk", filter=Q(failure=True)),
    )
    resolved = Incident.objects.filter(resolved_at__gte=start, resolved_at__lt=end)
    recovery = percentiles(resolved, seconds_between("opened_at", "resolved_at"), Value(1), (50,))
    frequency = counts["deployed"] / days
    failure = _ratio(counts["failed"], counts["finished"])
    figures = {
        "deployment_frequency": round(frequency, 4) if counts["deployed"] else None,
        "lead_time_hours": _hours(lead.get("p50")),
        "change_failure_rate": failure,
        "recovery_time_hours": _hours(recovery.get(1, {}).get("p50")),
    }
    pulls, reverts = int(merged.get("n", 0)), int(merged.get("reverts", 0))
    return {
        "deployments": counts["deployed"],
        "deployments_finished": counts["finished"],
        "failed_deployments": counts["failed"],
        "changes_deployed": int(lead.get("n", 0)),
        "incidents_resolved": recovery.get(1, {}).get("n", 0),
        "pull_requests_merged": pulls,
        "reverts": reverts,
        "revert_rate": _ratio(reverts, pulls),
        **{key: {"value": value, "band": band(key, value)} for key, value in figures.items()},
    }


def _per_day(start: datetime, end: datetime, days: list[date]) -> list[dict[str, Any]]:
    """Production deployments finished on each day of the window, deployed and failed."""
    counted = {day: {"deployed": 0, "failed": 0} for day in days}
    rows = (
        _production(start, end)
        .order_by()
        .annotate(day=day_index("finished_at", start, offsets(start, end)))
        .values_list("day")
        .annotate(
            deployed=Count("pk", filter=Q(status__in=Deployment.DEPLOYED)),
            failed=Count("pk", filter=Q(failure=True)),
        )
    )
    for day, deployed, failed in rows:
        if 0 <= day < len(days):
            counted[days[int(day)]] = {"deployed": deployed, "failed": failed}
    return [{"day": day.isoformat(), **counted[day]} for day in days]


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


def _reviews(merged: dict[str, float]) -> dict[str, Any]:
    """Review rounds, changes requested and size of the pull requests merged in the
    window (from ``_merged``)."""
    pulls, sized = int(merged.get("n", 0)), int(merged.get("sized", 0))
    asked = int(merged.get("changes_requested", 0))
    return {
        "pull_requests": pulls,
        "review_rounds_p50": merged.get("p50"),
        "review_rounds_p95": merged.get("p95"),
        "changes_requested": asked,
        "changes_requested_share": _ratio(asked, pulls),
        "sized": sized,
        "lines_changed_mean": _ratio(merged.get("lines", 0.0), sized, 1),
        "files_changed_mean": _ratio(merged.get("files", 0.0), sized, 1),
    }


def _float(expression: Any) -> Cast:
    # Cast both ways: SQLite keeps a whole-dollar decimal as an integer.
    return Cast(expression, FloatField())


def _providers(start: datetime, end: datetime) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """By provider: change failure rate (1 query), changes, their cost, good changes and
    the cost of each (1 query); and the totals."""
    through = Deployment.pull_requests.through
    failing = _production().filter(pk=OuterRef("deployment_id"), failure=True)
    rates = {
        provider: (deployments, failed)
        for provider, deployments, failed in through.objects.filter(
            deployment__in=_production(start, end).values("pk")
        )
        .annotate(failing=Exists(failing))
        .order_by()
        .values_list("pullrequest__issue__provider")
        .annotate(
            deployments=Count("deployment_id", distinct=True),
            failed=Count("deployment_id", distinct=True, filter=Q(failing=True)),
        )
    }
    siblings = (
        PullRequest.objects.filter(issue=OuterRef("issue_id"))
        .order_by()
        .values("issue_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    spoiled = _production().filter(pull_requests=OuterRef("pk"), failure=True)
    share = ExpressionWrapper(
        _float("issue__cost_usd") / _float(Subquery(siblings)), output_field=FloatField()
    )
    changes = {
        provider: (n, cost, good)
        for provider, n, cost, good in PullRequest.objects.filter(
            deployed_at__gte=start, deployed_at__lt=end
        )
        .annotate(share=share, spoiled=Exists(spoiled))
        .order_by()
        .values_list("issue__provider")
        .annotate(
            n=Count("pk"),
            cost=Coalesce(Sum("share"), Value(0.0)),
            good=Count("pk", filter=Q(spoiled=False)),
        )
    }
    rows = []
    for provider in sorted(set(rates) | set(changes)):
        deployments, failed = rates.get(provider, (0, 0))
        n, cost, good = changes.get(provider, (0, 0.0, 0))
        rows.append(
            {
                "provider": provider,
                "deployments": deployments,
                "change_failure_rate": _ratio(failed, deployments),
                **_cost_row(n, cost, good),
            }
        )
    return rows, _cost_row(*(sum(row[n] for row in changes.values()) for n in range(3)))


def _cost_row(changes: int, cost: float, good: int) -> dict[str, Any]:
    return {
        "changes": changes,
        "good_changes": good,
        "cost_usd": round(cost, 4),
        "cost_per_change_usd": _ratio(cost, changes),
        "cost_per_good_change_usd": _ratio(cost, good),
    }


def _waiting(start: datetime, end: datetime) -> dict[str, Any]:
    """Time the issues completed in the window waited for a person, against their cycle
    time (1 query)."""

    def summed(model: Any, begin: Any, finish: Any, **where: Any) -> Coalesce:
        rows = (
            model.objects.filter(issue=OuterRef("pk"), **where)
            .annotate(finish=finish)
            .annotate(span=seconds_between(begin, "finish"))
            .order_by()
            .values("issue")
            .annotate(total=Sum("span"))
            .values("total")
        )
        return Coalesce(Subquery(rows, output_field=FloatField()), Value(0.0))

    completed = Issue.objects.filter(
        status__in=COMPLETED,
        completed_at__gte=start,
        completed_at__lt=end,
        started_at__isnull=False,
    ).annotate(
        cycle=seconds_between("started_at", "completed_at"),
        approval_wait=summed(Approval, "requested_at", F("decided_at"), decided_at__isnull=False),
        review_wait=summed(
            PullRequest,
            Coalesce("ready_at", "created_at"),
            Coalesce("approved_at", "merged_at"),
            merged_at__isnull=False,
        ),
        escalation_wait=summed(
            Escalation, "created_at", Coalesce("resolved_at", "issue__completed_at")
        ),
    )
    completed = completed.annotate(
        waited=Least(F("approval_wait") + F("review_wait") + F("escalation_wait"), F("cycle"))
    )
    rows = (
        completed.order_by()
        .values_list("provider")
        .annotate(
            issues=Count("pk"),
            cycle_s=Sum("cycle"),
            waited_s=Sum("waited"),
            approvals_s=Sum("approval_wait"),
            reviews_s=Sum("review_wait"),
            escalations_s=Sum("escalation_wait"),
        )
    )
    sums = {provider: figures for provider, *figures in rows}
    total = (sum(row[n] for row in sums.values()) for n in range(6))
    return _wait_row(*total) | {
        "providers": [
            {"provider": provider, **_wait_row(*sums[provider])} for provider in sorted(sums)
        ]
    }


def _wait_row(
    issues: int, cycle: float, waited: float, approvals: float, reviews: float, escalations: float
) -> dict[str, Any]:
    return {
        "issues": issues,
        "cycle_hours": round(cycle / HOUR, 3),
        "waiting_hours": round(waited / HOUR, 3),
        "working_hours": round((cycle - waited) / HOUR, 3),
        "waiting_share": _ratio(waited, cycle),
        "waiting_for": {
            "approvals": round(approvals / HOUR, 3),
            "reviews": round(reviews / HOUR, 3),
            "escalations": round(escalations / HOUR, 3),
        },
    }


def delivery(days: int, now: datetime | None = None) -> dict[str, Any]:
    """The delivery report for the last ``days`` days and the ``days`` before them."""
    if days not in WINDOWS:
        raise ValueError(f"days must be one of {', '.join(map(str, WINDOWS))}")
    end = now or timezone.now()
    today = timezone.localtime(end).date()
    first = today - timedelta(days=days - 1)
    start, before = _midnight(first), _midnight(first - timedelta(days=days))
    by_provider, cost = _providers(start, end)
    lead, merged = _lead_times(before, start, end), _merged(before, start, end)
    return {
        "window": {
            "days": days,
            "since": start.isoformat(),
            "until": end.isoformat(),
            "time_zone": timezone.get_current_timezone_name(),
        },
        "previous_window": {"since": before.isoformat(), "until": start.isoformat()},
        "keys": _keys(start, end, days, lead.get(1, {}), merged.get(1, {})),
        "previous_keys": _keys(before, start, days, lead.get(0, {}), merged.get(0, {})),
        "deployments_per_day": _per_day(
            start, end, [first + timedelta(days=n) for n in range(days)]
        ),
        "stages": _stages(start, end),
        "reviews": _reviews(merged.get(1, {})),
        "waiting": _waiting(start, end),
        "cost": cost,
        "providers": by_provider,
        "bands": {
            key: dict(zip(NAMES, limits, strict=True)) | {"direction": direction}
            for key, (direction, limits) in BANDS.items()
        },
    }


def cached(days: int) -> dict[str, Any]:
    """``delivery(days)``, computed at most once per REPORTS_CACHE_SECONDS in every
    process sharing the cache, per time zone."""
    return cache.remembered("delivery", [str(days)], lambda: delivery(days))
