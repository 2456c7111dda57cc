from .access import (
    ApiToken,
    MetricFamily,
    MetricFamilyGroupPermission,
    MetricFamilyUserPermission,
)
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
    "ApiToken",
    "Approval",
    "AutonomousLoop",
    "Complexity",
    "Escalation",
    "Issue",
    "IssueType",
    "MetricFamily",
    "MetricFamilyGroupPermission",
    "MetricFamilyUserPermission",
    "Platform",
    "Priority",
    "Provider",
    "PullRequest",
]
