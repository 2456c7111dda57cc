from .domain import (
    Approval,
    AutonomousLoop,
    Complexity,
    Escalation,
    Issue,
    IssueType,
    Platform,
    Priority,
    Provider,
    PullRequest,
)

__all__ = [
    "Approval",
    "AutonomousLoop",
    "Complexity",
    "Escalation",
    "Issue",
    "IssueType",
    "Platform",
    "Priority",
    "Provider",
    "PullRequest",
]
