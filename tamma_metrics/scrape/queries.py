"""Aggregate queries behind the database gauges: one GROUP BY each.

Shared by the scrape-time collector and the API so a gauge and a JSON figure can
never disagree. Each function returns {label values: number} with every known label
combination present (0 included), so a series never vanishes from Prometheus; the one
exception is ``pending_since``, a timestamp that has no value when nothing is pending.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from .. import catalogue, labels
from ..conf import app_settings
from ..models import Approval, AutonomousLoop, Issue, Priority

Labels = tuple[str, ...]

ISSUE_QUEUE = "issues"


def _known(*choice_lists: list[str]) -> dict[Labels, float]:
    return dict.fromkeys(itertools.product(*choice_lists), 0.0)


def active_loops(now: datetime | None = None) -> dict[Labels, float]:
    """Running loops whose heartbeat is younger than the TTL, by (mode, environment)."""
    since = (now or timezone.now()) - timedelta(seconds=app_settings.LOOP_HEARTBEAT_TTL_SECONDS)
    result = _known(AutonomousLoop.Mode.values, AutonomousLoop.Environment.values)
    rows = (
        AutonomousLoop.objects.filter(
            status=AutonomousLoop.Status.RUNNING, last_heartbeat__gte=since
        )
        .order_by()
        .values_list("mode", "environment")
        .annotate(n=Count("id"))
    )
    for mode, environment, n in rows:
        result[(mode, environment)] = float(n)
    return result


def pending_approvals_rows() -> QuerySet[Approval, tuple[Any, ...]]:
    """(approval_type, priority, n) of pending approvals; reads the partial index
    tamma_approval_pending only (tests check the plan on each database)."""
    return (
        Approval.objects.filter(status=Approval.Status.PENDING)
        .order_by()
        .values_list("approval_type", "priority")
        .annotate(n=Count("id"))
    )


def pending_approvals() -> dict[Labels, float]:
    """Pending approval requests by (approval_type, priority)."""
    result = _known(Approval.ApprovalType.values, Priority.values)
    for approval_type, priority, n in pending_approvals_rows():
        result[(approval_type, priority)] = float(n)
    return result


def queue_depth_rows() -> QuerySet[Issue, tuple[Any, ...]]:
    """(priority, n) of queued issues; reads the partial index tamma_issue_queued_prio."""
    return (
        Issue.objects.filter(status=Issue.Status.QUEUED)
        .order_by()
        .values_list("priority")
        .annotate(n=Count("id"))
    )


def queue_depth() -> dict[Labels, float]:
    """Queued issues by (queue_type, priority)."""
    result = _known([ISSUE_QUEUE], Priority.values)
    for priority, n in queue_depth_rows():
        result[(ISSUE_QUEUE, priority)] = float(n)
    return result


def oldest_pending_approval_rows() -> QuerySet[Approval, tuple[Any, ...]]:
    """(approval_type, oldest requested_at) of pending approvals; same partial index."""
    return (
        Approval.objects.filter(status=Approval.Status.PENDING)
        .order_by()
        .values_list("approval_type")
        .annotate(oldest=Min("requested_at"))
    )


def oldest_pending_approval() -> dict[Labels, float]:
    """Unix time of the oldest pending request by approval_type; 0 when none is pending."""
    result = _known(Approval.ApprovalType.values)
    for approval_type, oldest in oldest_pending_approval_rows():
        result[(approval_type,)] = oldest.timestamp()
    return result


def pending_since() -> dict[Labels, float]:
    """The gauge of the oldest pending request: its Unix time, for the approval types
    with a request pending only. A type with none has no series, so ``time() - x`` never
    reads a 0 as a wait since 1970."""
    return {
        (approval_type,): oldest.timestamp()
        for approval_type, oldest in oldest_pending_approval_rows()
    }


def series_admitted() -> dict[Labels, float]:
    """Label combinations admitted per event family (0 included), shared by all processes,
    labelled with the served name (``tamma_escalations_total``) so it joins ``__name__``."""
    served = {f.name: f.full_name for f in catalogue.families()}
    events = (f for f in catalogue.families() if f.source is catalogue.Source.EVENT)
    result: dict[Labels, float] = {(family.full_name,): 0.0 for family in events}
    for family, n in labels.admitted_series().items():
        result[(served.get(family, family),)] = float(n)
    return result


# The gauge family each query feeds, by catalogue name.
GAUGES: dict[str, Callable[[], dict[Labels, float]]] = {
    "active_autonomous_loops": active_loops,
    "pending_approvals": pending_approvals,
    "queue_depth": queue_depth,
    "approval_oldest_pending_timestamp_seconds": pending_since,
    "metrics_series": series_admitted,
}
