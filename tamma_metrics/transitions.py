"""Which events a domain row's change stands for: the one mapping from a model
transition to ``record`` calls.

The signal receivers use it for every save; code that writes rows without signals
(``bulk_create``, ``QuerySet.update``, the demo's seeding) uses it too, so its counters
equal the database by construction. Each function returns the events and records
nothing: the caller records them once the rows are committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import record
from .models import Approval, Deployment, Escalation, Incident, Issue, PullRequest

__all__ = [
    "BY_MODEL",
    "Event",
    "approval",
    "deployment",
    "escalation",
    "incident",
    "issue",
    "pr_stages",
    "pull_request",
    "pull_request_deployed",
    "record_all",
]

# A ``record`` function and its keyword arguments.
Event = tuple[Callable[..., None], dict[str, Any]]


def issue(row: Issue, *, created: bool = False, previous: str | None = None) -> list[Event]:
    """An issue reached a terminal status that counts as processed (once)."""
    outcome = row.outcome
    if outcome is None or previous in Issue.OUTCOMES:
        return []
    duration = None
    if row.started_at and row.completed_at:
        duration = max((row.completed_at - row.started_at).total_seconds(), 0.0)
    return [
        (
            record.issue_processed,
            {
                "provider": row.provider,
                "platform": row.platform,
                "issue_type": row.issue_type,
                "complexity": row.complexity,
                "outcome": outcome,
                "duration_seconds": duration,
            },
        )
    ]


def pull_request(
    row: PullRequest, *, created: bool = False, previous: str | None = None
) -> list[Event]:
    """A pull request was opened, and/or merged (once)."""
    merged_now = row.status == PullRequest.Status.MERGED and previous != PullRequest.Status.MERGED
    if not (created or merged_now):
        return []
    of_issue = row.issue
    common = {
        "provider": of_issue.provider,
        "platform": row.platform,
        "issue_type": of_issue.issue_type,
    }
    events: list[Event] = []
    if created:
        events.append((record.pr_created, {**common, "actor": row.actor}))
    if merged_now:
        events.append((record.pr_merged, {**common, "merge_strategy": row.merge_strategy}))
        for stage, seconds in pr_stages(row).items():
            events.append(
                (record.pr_stage, {"platform": row.platform, "stage": stage, "seconds": seconds})
            )
    return events


def pr_stages(row: PullRequest) -> dict[str, float]:
    """Seconds of each stage up to the merge whose two ends are known: coding (first
    commit to ready, or opened when never a draft), pickup (to the first review),
    review (to the approval, or the merge when none was recorded), merge (approval to
    merge)."""
    ready = row.ready_at or row.created_at
    spans = {
        "coding": (row.first_commit_at, ready),
        "pickup": (ready, row.first_review_at),
        "review": (row.first_review_at, row.approved_at or row.merged_at),
        "merge": (row.approved_at, row.merged_at),
    }
    return {
        stage: max((end - start).total_seconds(), 0.0)
        for stage, (start, end) in spans.items()
        if start is not None and end is not None
    }


def pull_request_deployed(row: PullRequest) -> list[Event]:
    """A pull request reached production (``deployed_at`` set, once): its change's lead
    time from the first commit (or its opening) and its deploy stage from the merge."""
    assert row.deployed_at is not None
    start = row.first_commit_at or row.created_at
    events: list[Event] = [
        (
            record.change_deployed,
            {
                "platform": row.platform,
                "lead_time_seconds": max((row.deployed_at - start).total_seconds(), 0.0),
            },
        )
    ]
    if row.merged_at is not None:
        seconds = max((row.deployed_at - row.merged_at).total_seconds(), 0.0)
        events.append(
            (record.pr_stage, {"platform": row.platform, "stage": "deploy", "seconds": seconds})
        )
    return events


def escalation(
    row: Escalation, *, created: bool = False, previous: str | None = None
) -> list[Event]:
    """An escalation was raised."""
    if not created:
        return []
    return [
        (
            record.escalation,
            {
                "escalation_type": row.escalation_type,
                "severity": row.severity,
                "component": row.component,
                "reason": row.reason,
            },
        )
    ]


def approval(row: Approval, *, created: bool = False, previous: str | None = None) -> list[Event]:
    """An approval was decided (once): its outcome and how long it waited."""
    if not row.is_decided or previous not in (None, Approval.Status.PENDING):
        return []
    assert row.decided_at is not None  # Approval.save stamps a decided approval
    wait = max((row.decided_at - row.requested_at).total_seconds(), 0.0)
    return [
        (
            record.approval_decided,
            {"approval_type": row.approval_type, "outcome": row.status, "wait_seconds": wait},
        )
    ]


def deployment(
    row: Deployment, *, created: bool = False, previous: str | None = None
) -> list[Event]:
    """A deployment finished (once) or a deployed one was rolled back (once more): a
    rolled-back deployment had been deployed, so it counts as a success too."""
    common = {"platform": row.platform, "environment": row.environment_label}
    was_deployed = previous in Deployment.DEPLOYED
    outcomes = []
    if row.status == Deployment.Status.FAILED and previous != row.status:
        outcomes.append("failure")
    if row.status in Deployment.DEPLOYED and not was_deployed:
        outcomes.append("success")
    if row.status == Deployment.Status.ROLLED_BACK and previous != row.status:
        outcomes.append("rolled_back")
    return [(record.deployment_finished, {**common, "outcome": o}) for o in outcomes]


def incident(row: Incident, *, created: bool = False, previous: str | None = None) -> list[Event]:
    """An incident opened (once), and was resolved (once): the time to recover."""
    events: list[Event] = []
    if created:
        events.append((record.incident_opened, {"severity": row.severity}))
    if row.status == Incident.Status.RESOLVED and previous != row.status:
        assert row.resolved_at is not None  # Incident.save stamps a resolved incident
        recovery = max((row.resolved_at - row.opened_at).total_seconds(), 0.0)
        events.append(
            (
                record.incident_resolved,
                {"platform": row.platform, "severity": row.severity, "recovery_seconds": recovery},
            )
        )
    return events


# The transition function of each model whose saves are counted.
BY_MODEL: dict[type, Callable[..., list[Event]]] = {
    Issue: issue,
    PullRequest: pull_request,
    Escalation: escalation,
    Approval: approval,
    Deployment: deployment,
    Incident: incident,
}


def record_all(events: list[Event]) -> None:
    """Record the events now (after the rows committed)."""
    for func, kwargs in events:
        func(**kwargs)
