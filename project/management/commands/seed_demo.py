"""Realistic demo data for Tamma, fast enough for a million issues.

Rows are inserted in bulk (no signals), so the command records the events of each
committed row itself, through the same ``tamma_metrics.transitions`` the signal
receivers use: with a shared multiprocess folder, /metrics equals the database by
construction. Work that has no table (AI requests, generated code, test runs) is
recorded through ``tamma_metrics.record``. Issue ``i`` always gets
the same attributes, and a run only adds the issues a previous run did not create,
so the command is idempotent; ``--reset`` deletes the demo rows first.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from tamma_metrics import catalogue, record, transitions
from tamma_metrics.models import (
    Approval,
    AutonomousLoop,
    Deployment,
    Escalation,
    Incident,
    Issue,
    PullRequest,
)

DEMO_PREFIX = "tamma-demo/"
REPOSITORIES = [
    ("github", "tamma-demo/web-app"),
    ("github", "tamma-demo/api"),
    ("gitlab", "tamma-demo/mobile"),
    ("gitea", "tamma-demo/infra"),
    ("bitbucket", "tamma-demo/billing"),
    ("azure_devops", "tamma-demo/data-pipeline"),
]
PROVIDERS = {  # provider: (weight, models)
    "anthropic": (40, ["claude-sonnet", "claude-opus", "claude-haiku"]),
    "openai": (28, ["gpt-4o", "o3"]),
    "google": (10, ["gemini-pro"]),
    "azure_openai": (8, ["gpt-4o"]),
    "aws_bedrock": (7, ["claude-sonnet"]),
    "mistral": (5, ["mistral-large"]),
    "local": (2, ["llama-3"]),
}
ISSUE_TYPES = (
    ["feature", "bug", "refactor", "documentation", "test", "chore"],
    [35, 30, 12, 8, 10, 5],
)
STATUSES = (
    ["succeeded", "failed", "timed_out", "cancelled", "queued", "in_progress", "awaiting_approval"],
    [70, 10, 4, 3, 6, 4, 3],
)
PRIORITIES = (["low", "medium", "high", "critical"], [25, 45, 22, 8])
COMPLEXITY_HOURS = {"low": 0.4, "medium": 1.5, "high": 6.0}
LANGUAGES = {
    "web-app": "typescript",
    "api": "python",
    "mobile": "kotlin",
    "infra": "go",
    "billing": "java",
    "data-pipeline": "python",
}
EXTENSIONS = {"typescript": "ts", "python": "py", "kotlin": "kt", "go": "go", "java": "java"}
ESCALATIONS = [
    ("blocked", "orchestrator", "missing_context"),
    ("ambiguous_requirements", "planner", "unclear_acceptance"),
    ("test_failure", "test_runner", "flaky_tests"),
    ("permission", "git", "protected_branch"),
    ("budget", "ai_gateway", "token_budget"),
    ("safety", "reviewer", "secret_detected"),
]
LOOPS = [  # name, mode, environment, status, heartbeat age in seconds
    ("orchestrator-prod", "orchestrator", "production", "running", 5),
    ("worker-prod-1", "worker", "production", "running", 12),
    ("worker-prod-2", "worker", "production", "running", 20),
    ("worker-prod-3", "worker", "production", "running", 3600),  # stale: not active
    ("orchestrator-staging", "orchestrator", "staging", "running", 30),
    ("worker-staging-1", "worker", "staging", "paused", 40),
    ("cli-dev", "cli", "development", "running", 60),
    ("worker-dev-1", "worker", "development", "stopped", 7200),
]
BATCH = 5000
# Approvals still pending when the demo starts: requested as long ago as a decided one
# waited (the same draw, median half an hour), at most PENDING_WAIT_MAX; the first issue
# awaiting approval has waited OLD_PENDING_WAIT, the one a person forgot, under the
# health page's 24-hour rule (it crosses it after four hours of running the demo).
DECIDED_WAIT = (7.5, 1.2)  # lognormal seconds: median e**7.5 s, about 30 minutes
PENDING_WAIT_MAX = timedelta(hours=6)
OLD_PENDING_WAIT = timedelta(hours=20)


def _in_vocabulary(label: str, values: list[str] | tuple[str, ...]) -> None:
    """The demo draws label values from the catalogue's vocabularies: a value outside one
    would fold to ``other`` and the demo would not show what it meant to."""
    unknown = set(values) - set(catalogue.VOCABULARIES[label])
    if unknown:
        raise ImproperlyConfigured(f"seed_demo: {label} {sorted(unknown)} not in the catalogue")


_in_vocabulary("platform", [platform for platform, _ in REPOSITORIES])
_in_vocabulary("provider", list(PROVIDERS))
_in_vocabulary("issue_type", ISSUE_TYPES[0])
_in_vocabulary("priority", PRIORITIES[0])
_in_vocabulary("complexity", list(COMPLEXITY_HOURS))
_in_vocabulary("escalation_type", [kind for kind, _, _ in ESCALATIONS])


def _pick(rng: random.Random, choices: tuple[list[str], list[int]]) -> str:
    return rng.choices(choices[0], weights=choices[1])[0]


@dataclass
class Batch:
    issues: list[Issue] = field(default_factory=list)
    prs: list[tuple[int, PullRequest]] = field(default_factory=list)
    approvals: list[tuple[int, Approval]] = field(default_factory=list)
    escalations: list[tuple[int, Escalation]] = field(default_factory=list)
    # A production deployment per merged pull request (by its position in ``prs``), and
    # the incidents of some of them (by the deployment's position).
    deployments: list[tuple[int, Deployment]] = field(default_factory=list)
    incidents: list[tuple[int, Incident]] = field(default_factory=list)
    # Events of work that has no table: (record function, kwargs).
    events: list[transitions.Event] = field(default_factory=list)


class Command(BaseCommand):
    help = "Create realistic demo data (idempotent); record the matching events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--issues", type=int, default=1000, help="Total demo issues wanted (default 1000)."
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Delete the demo rows first, then create them anew.",
        )
        parser.add_argument("--seed", type=int, default=7, help="Random seed (default 7).")

    def handle(self, *args, issues: int, reset: bool, seed: int, **options) -> None:
        if issues < 0:
            self.stderr.write("--issues must be 0 or more")
            raise SystemExit(2)
        started = time.monotonic()
        self.seed = seed
        self.now = timezone.now().replace(microsecond=0)
        if reset:
            self._reset()
        self._loops()
        demo = Issue.objects.filter(repository__startswith=DEMO_PREFIX)
        existing = demo.count()
        self.first_waiting = self._first_waiting(issues)
        for first in range(existing, issues, BATCH):
            self._insert_batch(first, min(first + BATCH, issues))
        created = max(issues - existing, 0)
        self.stdout.write(
            f"Demo data: {created} issues created, {existing} already there "
            f"({time.monotonic() - started:.1f} s)."
        )

    def _reset(self) -> None:
        with transaction.atomic():
            Escalation.objects.filter(issue__repository__startswith=DEMO_PREFIX).delete()
            Incident.objects.filter(repository__startswith=DEMO_PREFIX).delete()
            Deployment.objects.filter(repository__startswith=DEMO_PREFIX).delete()
            Issue.objects.filter(repository__startswith=DEMO_PREFIX).delete()
            AutonomousLoop.objects.filter(name__in=[loop[0] for loop in LOOPS]).delete()

    def _loops(self) -> None:
        # One statement each (an UPDATE, else an INSERT), never a read then a write in one
        # transaction: on SQLite that write would have to upgrade a read lock, which fails
        # at once ("database is locked") while a server process writes, without waiting.
        for name, mode, environment, status, age in LOOPS:
            values = {
                "mode": mode,
                "environment": environment,
                "status": status,
                "last_heartbeat": self.now - timedelta(seconds=age),
            }
            if not AutonomousLoop.objects.filter(name=name).update(**values):
                AutonomousLoop.objects.create(name=name, **values)

    def _insert_batch(self, first: int, last: int) -> None:
        batch = Batch()
        for index in range(first, last):
            self._plan_issue(index, batch)
        with transaction.atomic():
            Issue.objects.bulk_create(batch.issues)
            for rows, model in (
                (batch.prs, PullRequest),
                (batch.approvals, Approval),
                (batch.escalations, Escalation),
            ):
                for position, row in rows:
                    row.issue = batch.issues[position]
                model.objects.bulk_create([row for _, row in rows])
            Deployment.objects.bulk_create([row for _, row in batch.deployments])
            Deployment.pull_requests.through.objects.bulk_create(
                [
                    Deployment.pull_requests.through(
                        deployment=row, pullrequest=batch.prs[position][1]
                    )
                    for position, row in batch.deployments
                ]
            )
            for position, incident in batch.incidents:
                incident.deployment = batch.deployments[position][1]
            Incident.objects.bulk_create([row for _, row in batch.incidents])
        # Only what committed is counted, as the receivers would count it.
        events = [e for issue in batch.issues for e in transitions.issue(issue)]
        for _, pr in batch.prs:
            events += transitions.pull_request(pr, created=True)
            if pr.deployed_at is not None:
                events += transitions.pull_request_deployed(pr)
        for _, deployment in batch.deployments:
            events += transitions.deployment(deployment, created=True)
        for _, incident in batch.incidents:
            events += transitions.incident(incident, created=True)
        for _, approval in batch.approvals:
            events += transitions.approval(approval)
        for _, escalation in batch.escalations:
            events += transitions.escalation(escalation, created=True)
        transitions.record_all(events + batch.events)

    def _past(self, moment: datetime) -> datetime:
        """Nothing in the demo happens in the future."""
        return min(moment, self.now - timedelta(seconds=1))

    def _draw(self, index: int) -> tuple[random.Random, str, str, str]:
        """Issue ``index``'s random source and its first draws: provider, type, status."""
        rng = random.Random(f"{self.seed}:{index}")
        provider = rng.choices(list(PROVIDERS), weights=[w for w, _ in PROVIDERS.values()])[0]
        issue_type = _pick(rng, ISSUE_TYPES)
        return rng, provider, issue_type, _pick(rng, STATUSES)

    def _first_waiting(self, issues: int) -> int | None:
        """The first issue awaiting approval: its approval is the old one."""
        for index in range(issues):
            if self._draw(index)[3] == "awaiting_approval":
                return index
        return None

    def _pending_wait(self, rng: random.Random, index: int) -> timedelta:
        """How long issue ``index``'s pending approval has waited."""
        if index == self.first_waiting:
            return OLD_PENDING_WAIT
        return min(timedelta(seconds=rng.lognormvariate(*DECIDED_WAIT)), PENDING_WAIT_MAX)

    def _plan_issue(self, index: int, batch: Batch) -> None:
        rng, provider, issue_type, status = self._draw(index)
        platform, repository = REPOSITORIES[index % len(REPOSITORIES)]
        complexity = rng.choice(["low", "medium", "medium", "high"])
        created = self.now - timedelta(seconds=rng.uniform(600, 30 * 86400))
        waited = None
        if status == "awaiting_approval":
            # The work (from two hours to two days) ended when the approval was requested.
            waited = self._pending_wait(rng, index)
            created = self.now - waited - timedelta(seconds=rng.uniform(2 * 3600, 2 * 86400))
        issue = Issue(
            platform=platform,
            repository=repository,
            external_id=str(index + 1),
            title=f"Demo issue {index + 1}",
            issue_type=issue_type,
            complexity=complexity,
            priority=_pick(rng, PRIORITIES),
            provider=provider,
            status=status,
            created_at=created,
        )
        position = len(batch.issues)
        batch.issues.append(issue)

        if status != "queued":
            issue.started_at = self._past(created + timedelta(seconds=rng.uniform(5, 1800)))
            self._plan_agent_work(rng, issue, batch)
        if status in Issue.TERMINAL:
            hours = rng.lognormvariate(0, 0.8) * COMPLEXITY_HOURS[complexity]
            issue.completed_at = min(issue.started_at + timedelta(hours=hours), self.now)
        if status in ("succeeded", "failed", "awaiting_approval"):
            self._plan_pull_request(rng, index, issue, position, batch)
        if status in ("succeeded", "failed", "awaiting_approval"):
            self._plan_approval(rng, issue, position, batch, waited)
        if rng.random() < (0.35 if status in ("failed", "timed_out") else 0.04):
            kind, component, reason = rng.choice(ESCALATIONS)
            escalation = Escalation(
                # Natural keys, as Tamma sends them: the state API can update these rows.
                external_id=f"demo-escalation-{index + 1}",
                escalation_type=kind,
                severity=_pick(rng, (["low", "medium", "high", "critical"], [30, 40, 22, 8])),
                component=component,
                reason=reason,
                created_at=(issue.started_at or created) + timedelta(minutes=rng.uniform(1, 60)),
            )
            if rng.random() < 0.75:  # most are answered within a few hours
                answered = escalation.created_at + timedelta(hours=rng.lognormvariate(0, 1))
                if answered < self.now:
                    escalation.resolved_at = answered
            batch.escalations.append((position, escalation))

    def _plan_pull_request(
        self,
        rng: random.Random,
        index: int,
        issue: Issue,
        position: int,
        batch: Batch,
    ) -> None:
        if issue.status == "succeeded":
            status = "merged" if rng.random() < 0.92 else "closed"
        elif issue.status == "failed":
            if rng.random() > 0.3:
                return
            status = "closed"
        else:
            status = "open"
        actor = "system" if rng.random() < 0.85 else "user"
        strategy = rng.choices(["squash", "merge", "rebase"], weights=[70, 20, 10])[0]
        created = self._past(issue.started_at + timedelta(minutes=rng.uniform(5, 90)))
        pr = PullRequest(
            platform=issue.platform,
            repository=issue.repository,
            number=index + 1,
            actor=actor,
            status=status,
            merge_strategy=strategy,
            created_at=created,
            merged_at=issue.completed_at if status == "merged" else None,
        )
        self._plan_timeline(rng, pr, issue)
        batch.prs.append((position, pr))
        if status == "merged":
            self._plan_deployment(rng, index, pr, len(batch.prs) - 1, batch)

    def _plan_timeline(self, rng: random.Random, pr: PullRequest, issue: Issue) -> None:
        """First commit, draft, reviews and approval between opening and the end."""
        end = pr.merged_at or issue.completed_at or self.now
        span = max(end - pr.created_at, timedelta(minutes=1))
        pr.first_commit_at = pr.created_at - timedelta(minutes=rng.uniform(5, 90))
        start = pr.created_at
        if rng.random() < 0.3:  # opened as a draft
            pr.ready_at = start = self._past(pr.created_at + span * rng.uniform(0.05, 0.2))
        if pr.status != "open" or rng.random() < 0.5:
            pr.first_review_at = self._past(start + span * rng.uniform(0.1, 0.3))
            pr.review_rounds = rng.choices([1, 2, 3], weights=[60, 30, 10])[0]
            pr.changes_requested = rng.randint(0, pr.review_rounds - 1)
        if pr.status == "merged" and pr.first_review_at is not None:
            pr.approved_at = min(pr.first_review_at + span * rng.uniform(0.1, 0.4), end)
        if pr.status == "closed":
            pr.closed_at = end
        pr.files_changed = rng.randint(1, 30)
        pr.additions = pr.files_changed * rng.randint(3, 60)
        pr.deletions = pr.files_changed * rng.randint(0, 25)
        pr.is_revert = rng.random() < 0.02

    def _plan_deployment(
        self, rng: random.Random, index: int, pr: PullRequest, position: int, batch: Batch
    ) -> None:
        """A production deployment of the merged ``pr``: most succeed, some fail, a few
        are rolled back after an incident; the incidents are resolved."""
        started = pr.merged_at + timedelta(minutes=rng.uniform(5, 240))
        finished = started + timedelta(minutes=rng.uniform(3, 25))
        if finished >= self.now:
            return  # not deployed yet
        status = _pick(rng, (["succeeded", "failed", "rolled_back"], [85, 8, 7]))
        deployment = Deployment(
            platform=pr.platform,
            repository=pr.repository,
            external_id=f"demo-deploy-{index + 1}",
            environment=Deployment.PRODUCTION,
            tier=Deployment.Tier.PRODUCTION,  # bulk_create: save() does not derive it
            status=status,
            commit_sha=f"{rng.getrandbits(160):040x}",
            started_at=started,
            finished_at=finished,
        )
        batch.deployments.append((position, deployment))
        if status in Deployment.DEPLOYED:
            pr.deployed_at = finished
        if status == "rolled_back" or (status == "succeeded" and rng.random() < 0.04):
            opened = finished + timedelta(minutes=rng.uniform(2, 90))
            if opened >= self.now:
                return
            resolved = opened + timedelta(minutes=rng.lognormvariate(4, 1))
            incident = Incident(
                platform=pr.platform,
                repository=pr.repository,
                external_id=f"demo-incident-{index + 1}",
                severity=_pick(rng, (["low", "medium", "high", "critical"], [20, 40, 30, 10])),
                status="resolved" if resolved < self.now else "open",
                opened_at=opened,
                resolved_at=resolved if resolved < self.now else None,
            )
            batch.incidents.append((len(batch.deployments) - 1, incident))

    def _plan_approval(
        self,
        rng: random.Random,
        issue: Issue,
        position: int,
        batch: Batch,
        waited: timedelta | None = None,
    ) -> None:
        """A decided approval for some finished issues; the pending one of an issue
        awaiting approval, requested ``waited`` ago."""
        if issue.status == "awaiting_approval":
            status = "pending"
        elif rng.random() < 0.4:
            status = "approved" if issue.status == "succeeded" else "rejected"
            if rng.random() < 0.05:
                status = "expired"
        else:
            return
        approval_type = rng.choices(
            ["code_review", "merge", "deployment", "plan"], weights=[45, 30, 15, 10]
        )[0]
        requested = self._past(issue.started_at + timedelta(minutes=rng.uniform(10, 120)))
        decided: datetime | None = None
        if status != "pending":
            decided = self._past(requested + timedelta(seconds=rng.lognormvariate(*DECIDED_WAIT)))
        elif waited is not None:
            requested = self.now - waited
        approval = Approval(
            external_id=f"{approval_type}-1",
            approval_type=approval_type,
            priority=issue.priority,
            status=status,
            requested_at=requested,
            decided_at=decided,
        )
        batch.approvals.append((position, approval))

    def _plan_agent_work(self, rng: random.Random, issue: Issue, batch: Batch) -> None:
        """Events that have no table: AI requests, code generation, changes, test runs."""
        _, models = PROVIDERS[issue.provider]
        language = LANGUAGES[issue.repository.removeprefix(DEMO_PREFIX)]
        for _ in range(rng.randint(1, 4)):
            input_tokens = int(rng.lognormvariate(8, 1))
            cost = round(input_tokens * 3e-6, 6)
            outcome = rng.choices(["success", "failure", "timeout"], weights=[93, 5, 2])[0]
            batch.events.append(
                (
                    record.ai_request,
                    {
                        "provider": issue.provider,
                        "model": rng.choice(models),
                        "request_type": rng.choice(["chat", "chat", "completion", "embedding"]),
                        "outcome": outcome,
                        "duration_seconds": rng.lognormvariate(1.2, 0.9),
                        "tokens": {
                            "input": input_tokens,
                            "output": input_tokens // rng.randint(3, 8),
                        },
                        "cost_usd": cost,
                    },
                )
            )
            # The row holds what its requests cost, as Tamma reports it.
            issue.cost_usd += Decimal(str(cost))
        files = rng.randint(1, 12)
        batch.events.append(
            (
                record.code_generation,
                {
                    "provider": issue.provider,
                    "language": language,
                    "complexity": issue.complexity,
                    "file_count": files,
                    "duration_seconds": rng.lognormvariate(3, 0.8),
                },
            )
        )
        batch.events.append(
            (
                record.code_change,
                {
                    "change_type": rng.choice(["create", "update", "update", "delete"]),
                    "language": language,
                    "actor": "system",
                    "file_type": EXTENSIONS[language],
                    "count": files,
                },
            )
        )
        batch.events.append(
            (
                record.test_execution,
                {
                    "test_type": rng.choice(["unit", "integration", "e2e"]),
                    "framework": {"python": "pytest", "typescript": "vitest"}.get(
                        language, "junit"
                    ),
                    "language": language,
                    "result": rng.choices(["success", "failure", "timeout"], weights=[85, 13, 2])[
                        0
                    ],
                    "duration_seconds": rng.lognormvariate(4, 1),
                },
            )
        )
