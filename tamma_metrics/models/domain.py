"""Domain models of Tamma's work: issues, pull requests, approvals, escalations, loops.

Their lifecycle feeds the counters (see receivers.py); the gauges are computed from
them at scrape time (see queries.py). Choices double as the known label values that
the gauges emit even at 0, so a series never vanishes.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from .. import catalogue


def _vocabulary(name: str, label: str, only: tuple[str, ...] | None = None) -> Any:
    """TextChoices of a label's vocabulary in the catalogue (the one source of both)."""
    pairs = catalogue.choices(label, only=only)
    return models.TextChoices(name, [(value.upper(), (value, shown)) for value, shown in pairs])


Platform = _vocabulary("Platform", "platform")
Provider = _vocabulary("Provider", "provider")
IssueType = _vocabulary("IssueType", "issue_type")
Complexity = _vocabulary("Complexity", "complexity", only=("low", "medium", "high"))
Priority = _vocabulary("Priority", "priority")


class Issue(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        IN_PROGRESS = "in_progress", "In progress"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"

    # Terminal statuses that count as processed, and the outcome label of each.
    OUTCOMES = {Status.SUCCEEDED: "success", Status.FAILED: "failure", Status.TIMED_OUT: "timeout"}
    TERMINAL = frozenset({*OUTCOMES, Status.CANCELLED})

    platform = models.CharField(max_length=32, choices=Platform.choices)
    repository = models.CharField(max_length=200)
    external_id = models.CharField(max_length=64, help_text="Issue number or id on the platform.")
    title = models.CharField(max_length=300, blank=True, help_text="Never used as a label.")
    issue_type = models.CharField(max_length=32, choices=IssueType.choices)
    complexity = models.CharField(
        max_length=16, choices=Complexity.choices, default=Complexity.MEDIUM
    )
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.MEDIUM)
    provider = models.CharField(max_length=32, choices=Provider.choices)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # When Tamma saw the state this row holds (the state API); null for rows written
    # another way. An observation older than this one changes nothing.
    observed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "repository", "external_id"], name="tamma_issue_unique_external"
            ),
        ]
        # Writing Tamma's state over HTTP (the state API); the orchestrator role has it.
        permissions = [
            ("change_domain", "Can write issues, pull requests, approvals, escalations and loops")
        ]
        indexes = [
            # queue_depth reads only queued rows: a partial index stays tiny at 1M issues.
            models.Index(
                fields=["priority"], condition=Q(status="queued"), name="tamma_issue_queued_prio"
            ),
            models.Index(fields=["status", "completed_at"], name="tamma_issue_status_done"),
        ]

    def __str__(self) -> str:
        return f"{self.repository}#{self.external_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Stamp the lifecycle times a caller did not set, so durations are always known.
        now = timezone.now()
        if self.status != self.Status.QUEUED and self.started_at is None:
            self.started_at = now
        if self.status in self.TERMINAL and self.completed_at is None:
            self.completed_at = now
        super().save(*args, **kwargs)

    @property
    def outcome(self) -> str | None:
        """The outcome label when the status counts as processed, else None."""
        return self.OUTCOMES.get(self.status)


class PullRequest(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        MERGED = "merged", "Merged"
        CLOSED = "closed", "Closed"

    Actor = _vocabulary("Actor", "actor")

    MergeStrategy = _vocabulary("MergeStrategy", "merge_strategy")

    issue = models.ForeignKey(Issue, on_delete=models.CASCADE, related_name="pull_requests")
    platform = models.CharField(max_length=32, choices=Platform.choices)
    repository = models.CharField(max_length=200)
    number = models.PositiveIntegerField()
    actor = models.CharField(max_length=16, choices=Actor.choices, default=Actor.SYSTEM)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    merge_strategy = models.CharField(
        max_length=16, choices=MergeStrategy.choices, default=MergeStrategy.SQUASH
    )
    created_at = models.DateTimeField(default=timezone.now)
    merged_at = models.DateTimeField(null=True, blank=True)
    # When Tamma saw the state this row holds (the state API); null for rows written
    # another way. An observation older than this one changes nothing.
    observed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "repository", "number"], name="tamma_pr_unique_number"
            ),
        ]
        # An issue's first pull request (velocity's first-time merges) is one index seek.
        indexes = [models.Index(fields=["issue", "created_at"], name="tamma_pr_issue_created")]

    def __str__(self) -> str:
        return f"{self.repository}!{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.status == self.Status.MERGED and self.merged_at is None:
            self.merged_at = timezone.now()
        super().save(*args, **kwargs)


class Approval(models.Model):
    ApprovalType = _vocabulary("ApprovalType", "approval_type")

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"

    issue = models.ForeignKey(Issue, on_delete=models.CASCADE, related_name="approvals")
    external_id = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="Tamma's id of the request, per issue.",
    )
    approval_type = models.CharField(max_length=32, choices=ApprovalType.choices)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.MEDIUM)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    requested_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    # When Tamma saw the state this row holds (the state API); null for rows written
    # another way. An observation older than this one changes nothing.
    observed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["issue", "external_id"],
                condition=~Q(external_id=""),
                name="tamma_approval_unique_external",
            ),
        ]
        indexes = [
            models.Index(
                fields=["approval_type", "priority", "requested_at"],
                condition=Q(status="pending"),
                name="tamma_approval_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_approval_type_display()} for {self.issue_id} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.is_decided and self.decided_at is None:
            self.decided_at = timezone.now()
        super().save(*args, **kwargs)

    @property
    def is_decided(self) -> bool:
        return self.status != self.Status.PENDING


class Escalation(models.Model):
    EscalationType = _vocabulary("EscalationType", "escalation_type")

    Severity = _vocabulary("Severity", "severity")

    issue = models.ForeignKey(
        Issue, on_delete=models.SET_NULL, null=True, blank=True, related_name="escalations"
    )
    external_id = models.CharField(
        max_length=128,
        blank=True,
        default="",
        db_default="",
        help_text="Tamma's id of the escalation.",
    )
    escalation_type = models.CharField(max_length=32, choices=EscalationType.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.MEDIUM)
    component = models.CharField(max_length=64, help_text="Part of Tamma that escalated.")
    reason = models.CharField(max_length=64, help_text="A short reason code, not free text.")
    created_at = models.DateTimeField(default=timezone.now)
    # When Tamma saw the state this row holds (the state API); null for rows written
    # another way. An observation older than this one changes nothing.
    observed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"],
                condition=~Q(external_id=""),
                name="tamma_escalation_unique_external",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.escalation_type} ({self.severity})"


class AutonomousLoop(models.Model):
    class Mode(models.TextChoices):
        ORCHESTRATOR = "orchestrator", "Orchestrator"
        WORKER = "worker", "Worker"
        CLI = "cli", "CLI"

    class Environment(models.TextChoices):
        DEVELOPMENT = "development", "Development"
        STAGING = "staging", "Staging"
        PRODUCTION = "production", "Production"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        STOPPED = "stopped", "Stopped"
        CRASHED = "crashed", "Crashed"

    name = models.CharField(max_length=100, unique=True)
    mode = models.CharField(max_length=16, choices=Mode.choices)
    environment = models.CharField(
        max_length=16, choices=Environment.choices, default=Environment.DEVELOPMENT
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    last_heartbeat = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["status", "last_heartbeat"], name="tamma_loop_alive")]

    def __str__(self) -> str:
        return self.name
