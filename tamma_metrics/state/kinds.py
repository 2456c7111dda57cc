"""What each kind of state is: its model, natural key, lifecycle, counted labels and the
fields that stop changing once a counter has used them.

The rule behind ``frozen``: a counter is an event-time snapshot that can never be
re-labelled, so a row may not change what its counted transition recorded; otherwise
the rows and ``/metrics`` would disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import models

from ..models import (
    Approval,
    AutonomousLoop,
    Deployment,
    Escalation,
    Incident,
    Issue,
    PullRequest,
    is_production_name,
)

__all__ = ["CREATED_AT", "EARLIEST", "FILL", "KINDS", "MAX", "SIZE", "Kind", "iso"]


@dataclass(frozen=True)
class Kind:
    """One endpoint's kind of row."""

    name: str
    model: type[models.Model]
    # Wire fields of the natural key; ``lookup`` turns them into the row's filter.
    key: tuple[str, ...]
    # Column -> (family, label) whose label policy the value passes before it is stored.
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Column holding the newest observation's time.
    observed: str = "observed_at"
    status: str | None = "status"
    # Lifecycle rank of each status: at the same observed_at the higher one wins.
    rank: dict[str, int] = field(default_factory=dict)
    # May a row in the first status take the second? (None: any move is allowed.)
    allowed: Callable[[str, str], bool] | None = None
    # The fields a row no longer changes, given the row and the fields an item changes.
    frozen: Callable[[Any, set[str]], frozenset[str]] = lambda row, changed: frozenset()
    # Fields stamped with observed_at when the item leaves them out and the row has none:
    # field -> whether the new state calls for it.
    stamps: dict[str, Callable[[dict[str, Any]], bool]] = field(default_factory=dict)
    # Whether items name an issue (by issue_external_id in their platform and repository).
    issue: str = ""  # "", "required" or "optional"
    # Wire fields naming other rows (resolved by ``links``), never columns themselves.
    references: tuple[str, ...] = ()
    # Facts that happen once, merged by a rule that does not depend on the order in which
    # observations arrive (docs/state.md, "Ordering"): field -> EARLIEST, FILL, MAX or SIZE.
    facts: dict[str, str] = field(default_factory=dict)
    # Times that follow each other, each chain in lifecycle order: the row's times, after an
    # item is merged into them, must not run backwards.
    chains: tuple[tuple[str, ...], ...] = ()
    # Completes an item from its raw values, before the label policy sees them.
    prepare: Callable[[dict[str, Any]], None] | None = None

    def lifecycle_rank(self, values: dict[str, Any]) -> int:
        return self.rank.get(values.get(self.status or "", ""), 0)

    def time_fields(self) -> frozenset[str]:
        return frozenset(name for chain in self.chains for name in chain)


# How a fact merges into the row, whatever the order of the observations that carry it.
# EARLIEST: the earliest time reported wins (when it happened does not change, an earlier
# report is the better one). MAX: a count that only grows. FILL: taken when the row has
# none, else only from a newer observation. SIZE: as FILL, and the larger of two values
# observed at the same second (a pull request's size as of that second).
EARLIEST, MAX, FILL, SIZE = "earliest", "max", "fill", "size"


def _issue_allowed(current: str, new: str) -> bool:
    return current == new or current not in Issue.TERMINAL


_ISSUE_COUNTED = frozenset({"provider", "issue_type"})


def _issue_frozen(row: Issue, changed: set[str]) -> frozenset[str]:
    if row.status in Issue.TERMINAL:
        every = {f.attname for f in Issue._meta.concrete_fields}
        # The AI cost is no counter's: the last requests' bill may arrive after the end.
        return frozenset(every - {"title", "cost_usd", "observed_at", "id"})
    # The pull requests' counters carry the issue's provider and type (asked only when
    # an item would change them).
    if changed & _ISSUE_COUNTED and row.pull_requests.exists():
        return _ISSUE_COUNTED
    return frozenset()


def _pr_allowed(current: str, new: str) -> bool:
    return current == new or current != PullRequest.Status.MERGED


# The stage durations counted at the merge read these.
_PR_TIMELINE = frozenset({"first_commit_at", "ready_at", "first_review_at", "approved_at"})


def _pr_frozen(row: PullRequest, changed: set[str]) -> frozenset[str]:
    if row.status == PullRequest.Status.MERGED:
        counted = {"issue_id", "actor", "merge_strategy", "created_at", "merged_at"}
        return frozenset(counted | _PR_TIMELINE)
    return frozenset({"issue_id", "actor"})


def _approval_allowed(current: str, new: str) -> bool:
    return current == new or current == Approval.Status.PENDING


def _approval_frozen(row: Approval, changed: set[str]) -> frozenset[str]:
    if row.is_decided:
        return frozenset({"approval_type", "priority", "requested_at", "decided_at"})
    return frozenset()


_ESCALATION_FIELDS = frozenset(
    {"escalation_type", "severity", "component", "reason", "created_at", "issue_id"}
)


def _terminal(values: dict[str, Any]) -> bool:
    return values.get("status") in Issue.TERMINAL


def _started(values: dict[str, Any]) -> bool:
    return values.get("status") != Issue.Status.QUEUED


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "issues",
            Issue,
            ("platform", "repository", "external_id"),
            labels={
                "provider": ("issues_processed_total", "provider"),
                "issue_type": ("issues_processed_total", "issue_type"),
                "complexity": ("issue_completion_duration_seconds", "complexity"),
            },
            rank={
                **dict.fromkeys(Issue.Status.values, 0),
                Issue.Status.IN_PROGRESS: 1,
                Issue.Status.AWAITING_APPROVAL: 2,
                **dict.fromkeys(Issue.TERMINAL, 3),
            },
            allowed=_issue_allowed,
            frozen=_issue_frozen,
            stamps={"started_at": _started, "completed_at": _terminal},
            facts={"created_at": EARLIEST},
            chains=(("created_at", "started_at", "completed_at"),),
        ),
        Kind(
            "pull-requests",
            PullRequest,
            ("platform", "repository", "number"),
            labels={
                "actor": ("prs_created_total", "actor"),
                "merge_strategy": ("prs_merged_total", "merge_strategy"),
            },
            rank={"open": 0, "closed": 1, "merged": 2},
            allowed=_pr_allowed,
            frozen=_pr_frozen,
            stamps={
                "merged_at": lambda v: v.get("status") == PullRequest.Status.MERGED,
                "closed_at": lambda v: v.get("status") == PullRequest.Status.CLOSED,
            },
            issue="required",
            facts={
                "created_at": EARLIEST,
                "first_commit_at": EARLIEST,
                "ready_at": EARLIEST,
                "first_review_at": EARLIEST,
                "approved_at": EARLIEST,
                "review_rounds": MAX,
                "changes_requested": MAX,
                "additions": SIZE,
                "deletions": SIZE,
                "files_changed": SIZE,
                "is_revert": FILL,
            },
            chains=(
                ("first_commit_at", "ready_at"),
                ("created_at", "ready_at"),
                ("created_at", "first_review_at", "approved_at", "merged_at"),
                ("created_at", "closed_at"),
            ),
        ),
        Kind(
            "approvals",
            Approval,
            ("platform", "repository", "issue_external_id", "external_id"),
            labels={"approval_type": ("approval_wait_duration_seconds", "approval_type")},
            rank={**dict.fromkeys(Approval.Status.values, 1), Approval.Status.PENDING: 0},
            allowed=_approval_allowed,
            frozen=_approval_frozen,
            stamps={"decided_at": lambda v: v.get("status") != Approval.Status.PENDING},
            issue="required",
            facts={"requested_at": EARLIEST},
            chains=(("requested_at", "decided_at"),),
        ),
        Kind(
            "escalations",
            Escalation,
            ("external_id",),
            labels={
                label: ("escalations_total", label)
                for label in ("escalation_type", "severity", "component", "reason")
            },
            status=None,
            frozen=lambda row, changed: _ESCALATION_FIELDS,
            issue="optional",
            chains=(("created_at", "resolved_at"),),
        ),
        Kind(
            "loops",
            AutonomousLoop,
            ("name",),
            observed="last_heartbeat",
        ),
    )
}


def _deployment_allowed(current: str, new: str) -> bool:
    if current == new or current not in Deployment.FINISHED:
        return True
    return current == Deployment.Status.SUCCEEDED and new == Deployment.Status.ROLLED_BACK


def _deployment_frozen(row: Deployment, changed: set[str]) -> frozenset[str]:
    # deployments_total carries the environment (production by its tier) from the first
    # finish on.
    if row.status in Deployment.FINISHED:
        return frozenset({"environment", "tier", "finished_at", "started_at"})
    return frozenset()


def _deployment_tier(values: dict[str, Any]) -> None:
    """A named environment without a tier is production when its name is one of
    PRODUCTION_ENVIRONMENTS, decided on the name as sent (the label policy may fold it)."""
    if "tier" not in values and "environment" in values:
        production = is_production_name(values["environment"])
        values["tier"] = Deployment.Tier.PRODUCTION if production else ""


def _incident_frozen(row: Incident, changed: set[str]) -> frozenset[str]:
    # incidents_total counted the severity when it opened; the recovery time, its times.
    if row.status == Incident.Status.RESOLVED:
        return frozenset({"severity", "opened_at", "resolved_at"})
    return frozenset({"severity"})


KINDS.update(
    {
        kind.name: kind
        for kind in (
            Kind(
                "deployments",
                Deployment,
                ("platform", "repository", "external_id"),
                labels={"environment": ("deployments_total", "environment")},
                rank={
                    Deployment.Status.PENDING: 0,
                    Deployment.Status.IN_PROGRESS: 1,
                    Deployment.Status.SUCCEEDED: 2,
                    Deployment.Status.FAILED: 2,
                    Deployment.Status.ROLLED_BACK: 3,
                },
                allowed=_deployment_allowed,
                frozen=_deployment_frozen,
                stamps={"finished_at": lambda v: v.get("status") in Deployment.FINISHED},
                references=("pull_requests",),
                prepare=_deployment_tier,
                facts={"started_at": EARLIEST, "commit_sha": FILL},
                chains=(("started_at", "finished_at"),),
            ),
            Kind(
                "incidents",
                Incident,
                ("platform", "repository", "external_id"),
                labels={"severity": ("incidents_total", "severity")},
                rank={Incident.Status.OPEN: 0, Incident.Status.RESOLVED: 1},
                allowed=lambda current, new: current == new or current == Incident.Status.OPEN,
                frozen=_incident_frozen,
                stamps={"resolved_at": lambda v: v.get("status") == Incident.Status.RESOLVED},
                references=("deployment_external_id",),
                facts={"opened_at": EARLIEST},
                chains=(("opened_at", "resolved_at"),),
            ),
        )
    }
)

# The column a new row takes observed_at into when the item does not say.
CREATED_AT: dict[str, str] = {
    "issues": "created_at",
    "pull-requests": "created_at",
    "approvals": "requested_at",
    "escalations": "created_at",
    "deployments": "started_at",
    "incidents": "opened_at",
}


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
