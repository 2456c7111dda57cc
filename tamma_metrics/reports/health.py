"""System health: what runs, what waits, what went wrong lately, and whether the metrics
layer itself is well, with an overall status. The health page and ``GET /api/v1/health``
both call ``health()``.

The overall status follows stated rules (thresholds are settings):

- **critical** when the database does not answer (within ``HEALTH_DATABASE_SECONDS``),
  or when the oldest pending approval has waited longer than
  ``HEALTH_APPROVAL_WAIT_CRITICAL_SECONDS``;
- **degraded** when at least ``HEALTH_ESCALATIONS_PER_HOUR_DEGRADED`` escalations were
  raised in the last hour, when at least ``HEALTH_QUEUE_DEPTH_DEGRADED`` issues are queued,
  or when no autonomous loop is active;
- **healthy** otherwise.

Recent escalations show their type, severity, component, reason code and age: never a
title or a person.

The status covers Tamma's work (``COVERS``, in the answer too); ``/metrics/health`` is the
service's liveness for load balancers, in other words ("ok", "unavailable"), so neither
reads as the other.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError
from django.utils import timezone
from prometheus_client import REGISTRY

from .. import budget, catalogue, instruments
from ..conf import app_settings
from ..models import Escalation
from ..scrape import exposition, queries
from .units import duration

__all__ = [
    "COVERS",
    "CRITICAL",
    "DEGRADED",
    "HEALTHY",
    "HIDDEN_REASON",
    "SECTIONS",
    "health",
    "restricted",
    "self_metrics",
]

HEALTHY, DEGRADED, CRITICAL = "healthy", "degraded", "critical"
COVERS = (
    "Tamma's work: pending approvals, escalations and, for the roles that see them, the "
    "autonomous loops, the queue and the metrics layer; critical too when the database "
    "does not answer. Whether this service answers at all (for load balancers) is "
    "/metrics/health, which says ok or unavailable."
)
RECENT_ESCALATIONS = 20
# Each part of the report and the family whose figures it reveals: a caller gets the
# parts whose family it may see, and the overall status when it sees any of them.
SECTIONS = {
    "active_loops": "active_autonomous_loops",
    "approvals": "pending_approvals",
    "queue_depth": "queue_depth",
    "recent_escalations": "escalations_total",
    "escalations_last_hour": "escalations_total",
    "metrics_layer": "metrics_collector_up",
    "last_scrape": "metrics_collector_up",
    "database_up": "metrics_collector_up",
}


def self_metrics() -> dict[str, Any]:
    """The metrics layer's own counters over every process: label folds and overflow by
    family, and the multiprocess files merged (from the folder, or this process)."""
    path = instruments.multiprocess_dir()
    wanted = {
        catalogue.get(name).metric_name: name
        for name in ("metrics_label_folds_total", "metrics_label_overflow_total")
    }
    totals: dict[str, dict[str, float]] = {name: defaultdict(float) for name in wanted.values()}
    files = None
    if path:
        read = exposition.merged_folder(path)
        metrics, files = read.metrics, read.files
    else:
        instruments.get_all()
        metrics = list(REGISTRY.collect())
    for metric in metrics:
        name = wanted.get(metric.name)
        if name is None:
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                totals[name][sample.labels.get("family", "")] += sample.value
    return {
        "label_folds": {k: int(v) for k, v in sorted(totals["metrics_label_folds_total"].items())},
        "label_overflow": {
            k: int(v) for k, v in sorted(totals["metrics_label_overflow_total"].items())
        },
        "multiprocess_files": files,
    }


def _database(now: datetime) -> dict[str, Any]:
    """The database's figures, within HEALTH_DATABASE_SECONDS (``up`` False otherwise)."""
    with budget.time_limited(float(app_settings.HEALTH_DATABASE_SECONDS)) as before_query:
        before_query()
        loops = queries.active_loops(now)
        before_query()
        pending = queries.pending_approvals()
        before_query()
        oldest = queries.oldest_pending_approval()
        before_query()
        queue = queries.queue_depth()
        before_query()
        recent = list(
            Escalation.objects.filter(created_at__gte=now - timedelta(hours=24))
            .order_by("-created_at")
            .values("escalation_type", "severity", "component", "reason", "created_at")[
                :RECENT_ESCALATIONS
            ]
        )
        before_query()
        last_hour = Escalation.objects.filter(created_at__gte=now - timedelta(hours=1)).count()
    by_type: dict[str, int] = defaultdict(int)
    for (approval_type, _priority), n in pending.items():
        by_type[approval_type] += int(n)
    approvals = []
    for (approval_type,), timestamp in oldest.items():
        approvals.append(
            {
                "approval_type": approval_type,
                "pending": by_type.get(approval_type, 0),
                "oldest_age_seconds": round(now.timestamp() - timestamp) if timestamp else None,
            }
        )
    return {
        "up": True,
        "active_loops": [
            {"mode": mode, "environment": environment, "active": int(n)}
            for (mode, environment), n in loops.items()
        ],
        "approvals": approvals,
        "queue_depth": [
            {"queue_type": queue_type, "priority": priority, "queued": int(n)}
            for (queue_type, priority), n in queue.items()
        ],
        "recent_escalations": [
            {
                "escalation_type": row["escalation_type"],
                "severity": row["severity"],
                "component": row["component"],
                "reason": row["reason"],
                "age_seconds": round((now - row["created_at"]).total_seconds()),
            }
            for row in recent
        ],
        "escalations_last_hour": last_hour,
    }


def _status(database: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """The overall status and the rules that set it, each with the family it is about."""
    if not database["up"]:
        return CRITICAL, [_reason("metrics_collector_up", "the database did not answer")]
    critical, degraded = [], []
    limit = float(app_settings.HEALTH_APPROVAL_WAIT_CRITICAL_SECONDS)
    for row in database["approvals"]:
        if row["oldest_age_seconds"] is not None and row["oldest_age_seconds"] > limit:
            text = f"a {row['approval_type']} approval has waited more than {duration(limit)}"
            critical.append(_reason("pending_approvals", text))
    escalations = int(app_settings.HEALTH_ESCALATIONS_PER_HOUR_DEGRADED)
    if database["escalations_last_hour"] >= escalations:
        text = f"{database['escalations_last_hour']} escalations in the last hour"
        degraded.append(_reason("escalations_total", text))
    queued = sum(row["queued"] for row in database["queue_depth"])
    if queued >= int(app_settings.HEALTH_QUEUE_DEPTH_DEGRADED):
        degraded.append(_reason("queue_depth", f"{queued} issues queued"))
    if not any(row["active"] for row in database["active_loops"]):
        degraded.append(_reason("active_autonomous_loops", "no autonomous loop is active"))
    if critical:
        return CRITICAL, critical + degraded
    if degraded:
        return DEGRADED, degraded
    return HEALTHY, []


def _reason(family: str, text: str) -> dict[str, str]:
    return {"about": family, "reason": text}


def health(now: datetime | None = None) -> dict[str, Any]:
    """Every health figure and the overall status; see the module docstring."""
    now = now or timezone.now()
    try:
        database = _database(now)
    except (DatabaseError, budget.BudgetExhausted):
        database = {"up": False}
    status, reasons = _status(database)
    return {
        "status": status,
        "covers": COVERS,
        "reasons": reasons,
        "rules": {
            "approval_wait_critical_seconds": app_settings.HEALTH_APPROVAL_WAIT_CRITICAL_SECONDS,
            "escalations_per_hour_degraded": app_settings.HEALTH_ESCALATIONS_PER_HOUR_DEGRADED,
            "queue_depth_degraded": app_settings.HEALTH_QUEUE_DEPTH_DEGRADED,
        },
        "checked_at": now.isoformat(),
        "database_up": database["up"],
        **{key: value for key, value in database.items() if key != "up"},
        "last_scrape": exposition.last_scrape(),
        "metrics_layer": self_metrics(),
    }


# What a caller who may not see a reason's family reads instead of its figures.
HIDDEN_REASON = "a figure you may not see passed its threshold"


def restricted(report: dict[str, Any], visible: set[str]) -> dict[str, Any]:
    """``report`` without the parts whose family is not in ``visible``: the status stays,
    a reason about a family the caller may not see keeps no figure."""
    kept = {
        key: value
        for key, value in report.items()
        if key not in SECTIONS or SECTIONS[key] in visible
    }
    kept["reasons"] = [
        reason if reason["about"] in visible else {"about": "", "reason": HIDDEN_REASON}
        for reason in report["reasons"]
    ]
    return kept
