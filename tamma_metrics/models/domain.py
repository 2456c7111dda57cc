"""Domain models of Tamma's work: issues, pull requests, approvals, escalations, loops,
and what reaches production: deployments and incidents.

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
from ..conf import app_settings
from .tracking import StatusTracked


def _vocabulary(name: str, label: str, only: tuple[str, ...] | None = None) -> Any:
    """TextChoices of a label's vocabulary in the catalogue (the one source of both)."""
    pairs = catalogue.choices(label, only=only)
    # The Enum functional API: django-stubs types only a member's __init__ for this call.
    return models.TextChoices(  # type: ignore[call-overload]
        name, [(value.upper(), (value, shown)) for value, shown in pairs]
    )


Platform = _vocabulary("Platform", "platform")
Provider = _vocabulary("Provider", "provider")
IssueType = _vocabulary("IssueType", "issue_type")
Complexity = _vocabulary("Complexity", "complexity", only=("low", "medium", "high"))
Priority = _vocabulary("Priority", "priority")


class Issue(StatusTracked):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        IN_PROGRESS = "in_progress", "In progress"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"

    # Terminal statuses that count as processed, and the outcome label of each.
    OUTCOMES: dict[str, str] = {
        Status.SUCCEEDED: "success",
        Status.FAILED: "failure",
        Status.TIMED_OUT: "timeout",
    }
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
    cost_usd = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        default=0,
        db_default=0,
        help_text="What the AI providers charged for the work on this issue so far (USD).",
    )
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


class PullRequest(StatusTracked):
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
    # unknown unless the sender says: GitHub's webhooks do not tell a squash from a merge.
    merge_strategy = models.CharField(
        max_length=16, choices=MergeStrategy.choices, default=MergeStrategy.UNKNOWN
    )
    created_at = models.DateTimeField(default=timezone.now)
    merged_at = models.DateTimeField(null=True, blank=True)
    # The timeline of delivery performance: coding (first commit to ready), pickup (ready
    # to first review), review (to approval), merge, deploy (to its first production
    # deployment).
    first_commit_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(
        null=True, blank=True, help_text="Out of draft; empty: ready when opened."
    )
    first_review_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(
        null=True, blank=True, help_text="When its first production deployment finished."
    )
    review_rounds = models.PositiveIntegerField(default=0)
    changes_requested = models.PositiveIntegerField(default=0)
    additions = models.PositiveIntegerField(default=0)
    deletions = models.PositiveIntegerField(default=0)
    files_changed = models.PositiveIntegerField(default=0)
    is_revert = models.BooleanField(default=False)
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


class PullRequestReview(models.Model):
    """A person's review of a pull request (or a GitLab approval), by the platform's own
    id: the same review delivered again, under another delivery id or in another event,
    counts once in the pull request's rounds."""

    pull_request = models.ForeignKey(PullRequest, on_delete=models.CASCADE, related_name="reviews")
    external_id = models.CharField(max_length=128, help_text="The platform's review id.")
    verdict = models.CharField(max_length=32)
    submitted_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["pull_request", "external_id"], name="tamma_review_unique_external"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pull_request} review {self.external_id} ({self.verdict})"


def is_production_name(environment: str) -> bool:
    """Whether an environment's name is one of PRODUCTION_ENVIRONMENTS (any case)."""
    names = app_settings.PRODUCTION_ENVIRONMENTS or ()
    return environment.casefold() in {name.casefold() for name in names}


class Approval(StatusTracked):
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
    resolved_at = models.DateTimeField(
        null=True, blank=True, help_text="When a person answered it and the work went on."
    )
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


class Deployment(StatusTracked):
    """A deployment of a repository to an environment, and the pull requests it shipped."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        IN_PROGRESS = "in_progress", "In progress"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        ROLLED_BACK = "rolled_back", "Rolled back"

    # Statuses that end a deployment. A succeeded deployment may still be rolled back;
    # failed and rolled back are final.
    FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK})
    FINAL = frozenset({Status.FAILED, Status.ROLLED_BACK})
    # A rolled-back deployment had been deployed: it counts as a success too.
    DEPLOYED = frozenset({Status.SUCCEEDED, Status.ROLLED_BACK})
    PRODUCTION = "production"

    class Tier(models.TextChoices):
        """GitLab's environment tiers; production is what the delivery figures count."""

        PRODUCTION = "production", "Production"
        STAGING = "staging", "Staging"
        TESTING = "testing", "Testing"
        DEVELOPMENT = "development", "Development"
        OTHER = "other", "Other"

    platform = models.CharField(max_length=32, choices=Platform.choices)
    repository = models.CharField(max_length=200)
    external_id = models.CharField(max_length=128, help_text="The platform's deployment id.")
    environment = models.CharField(
        max_length=64, default=PRODUCTION, help_text="production, staging, ... (a label)."
    )
    tier = models.CharField(
        max_length=16,
        choices=Tier.choices,
        blank=True,
        default="",
        help_text="The environment's tier as the platform says (GitLab's environment_tier); "
        "empty: production when the environment's name is in PRODUCTION_ENVIRONMENTS.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    commit_sha = models.CharField(max_length=64, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    pull_requests = models.ManyToManyField(
        PullRequest, blank=True, related_name="deployments", help_text="What it shipped."
    )
    # When Tamma or a webhook saw the state this row holds; older observations change
    # nothing.
    observed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "repository", "external_id"],
                name="tamma_deployment_unique_external",
            ),
        ]
        indexes = [
            # An incident's deployment: the last one to production before it opened.
            models.Index(
                fields=["platform", "repository", "tier", "finished_at"],
                name="tamma_deployment_tier_finished",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repository} {self.external_id} to {self.environment}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.status in self.FINISHED and self.finished_at is None:
            self.finished_at = timezone.now()
        if not self.tier and is_production_name(self.environment):
            self.tier = self.Tier.PRODUCTION
            fields = kwargs.get("update_fields")
            if fields is not None and "tier" not in fields:
                kwargs["update_fields"] = [*fields, "tier"]
        super().save(*args, **kwargs)

    @property
    def is_production(self) -> bool:
        return self.tier == self.Tier.PRODUCTION

    @property
    def environment_label(self) -> str:
        """The environment as counted: ``production`` for every production deployment,
        whatever its name, so the dashboards' ``environment="production"`` holds them."""
        return self.PRODUCTION if self.is_production else self.environment

    @property
    def outcome(self) -> str | None:
        outcomes: dict[str, str] = {
            self.Status.SUCCEEDED: "success",
            self.Status.FAILED: "failure",
            self.Status.ROLLED_BACK: "rolled_back",
        }
        return outcomes.get(self.status)


class Incident(StatusTracked):
    """A failure in production, attributed to the deployment that caused it."""

    Severity = _vocabulary("Severity", "severity")

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    platform = models.CharField(max_length=32, choices=Platform.choices)
    repository = models.CharField(max_length=200)
    external_id = models.CharField(max_length=128, help_text="The platform's issue or alert id.")
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.HIGH)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    opened_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    deployment = models.ForeignKey(
        Deployment, on_delete=models.SET_NULL, null=True, blank=True, related_name="incidents"
    )
    # True when no deployment was named and the last production deployment of the
    # repository before the incident opened was taken (as Apache DevLake does).
    attributed = models.BooleanField(default=False)
    observed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "repository", "external_id"],
                name="tamma_incident_unique_external",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repository} incident {self.external_id} ({self.severity})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.status == self.Status.RESOLVED and self.resolved_at is None:
            self.resolved_at = timezone.now()
        super().save(*args, **kwargs)


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
