"""Small builders for domain rows with sensible defaults."""

from __future__ import annotations

import itertools
from typing import Any

from tamma_metrics.models import Approval, AutonomousLoop, Escalation, Issue, PullRequest

_numbers = itertools.count(1)


def issue(**fields: Any) -> Issue:
    defaults = {
        "platform": "github",
        "repository": "acme/app",
        "issue_type": "bug",
        "provider": "anthropic",
        "complexity": "medium",
        "priority": "medium",
        "external_id": str(next(_numbers)),
    }
    return Issue.objects.create(**{**defaults, **fields})


def pull_request(issue_: Issue, **fields: Any) -> PullRequest:
    defaults = {
        "platform": issue_.platform,
        "repository": issue_.repository,
        "number": next(_numbers),
    }
    return PullRequest.objects.create(issue=issue_, **{**defaults, **fields})


def approval(issue_: Issue, **fields: Any) -> Approval:
    defaults = {"approval_type": "code_review", "priority": "medium"}
    return Approval.objects.create(issue=issue_, **{**defaults, **fields})


def escalation(**fields: Any) -> Escalation:
    defaults = {
        "escalation_type": "blocked",
        "severity": "high",
        "component": "orchestrator",
        "reason": "missing_context",
    }
    return Escalation.objects.create(**{**defaults, **fields})


def loop(**fields: Any) -> AutonomousLoop:
    defaults = {"name": f"loop-{next(_numbers)}", "mode": "worker", "environment": "production"}
    return AutonomousLoop.objects.create(**{**defaults, **fields})
