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
    Deployment,
    Escalation,
    Incident,
    Issue,
    IssueType,
    Platform,
    Priority,
    Provider,
    PullRequest,
)
from .ingest import IngestedEvent, WebhookDelivery, WebhookSecret
from .policy import Admission, LabelPolicy

__all__ = [
    "Admission",
    "ApiToken",
    "Approval",
    "AutonomousLoop",
    "Complexity",
    "Deployment",
    "Escalation",
    "Incident",
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
    "WebhookDelivery",
    "WebhookSecret",
]
