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
from .ingest import IngestedEvent
from .policy import Admission, LabelPolicy

__all__ = [
    "Admission",
    "ApiToken",
    "Approval",
    "AutonomousLoop",
    "Complexity",
    "Escalation",
    "IngestedEvent",
    "Issue",
    "IssueType",
    "LabelPolicy",
    "MetricFamily",
    "MetricFamilyGroupPermission",
    "MetricFamilyUserPermission",
    "Platform",
    "Priority",
    "Provider",
    "PullRequest",
]
