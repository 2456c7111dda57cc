"""seed_demo: varied data, idempotent, and the counters it records equal the database."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import Count, F, Sum
from django.utils import timezone

from tamma_metrics.models import (
    Approval,
    AutonomousLoop,
    Deployment,
    Escalation,
    Incident,
    Issue,
    PullRequest,
)
from tamma_metrics.reports import health
from tamma_metrics.roles import ORCHESTRATOR
from tests.utils import client_of, delta

pytestmark = pytest.mark.django_db(transaction=True)


def _truth() -> dict[str, dict]:
    """What the counters should say, computed from the rows."""
    processed = {}
    for row in (
        Issue.objects.filter(status__in=list(Issue.OUTCOMES))
        .values("provider", "platform", "issue_type", "status")
        .annotate(n=Count("id"))
    ):
        labels = {
            "provider": row["provider"],
            "platform": row["platform"],
            "issue_type": row["issue_type"],
            "outcome": Issue.OUTCOMES[row["status"]],
        }
        processed[frozenset(labels.items())] = float(row["n"])
    return {
        "tamma_issues_processed_total": processed,
        "tamma_prs_created_total": PullRequest.objects.count(),
        "tamma_prs_merged_total": PullRequest.objects.filter(status="merged").count(),
        "tamma_escalations_total": Escalation.objects.count(),
        "tamma_approval_wait_duration_seconds_count": Approval.objects.exclude(
            status="pending"
        ).count(),
        "tamma_change_lead_time_seconds_count": PullRequest.objects.exclude(
            deployed_at=None
        ).count(),
        "tamma_incidents_total": Incident.objects.count(),
        "tamma_failed_deployment_recovery_seconds_count": Incident.objects.filter(
            status="resolved"
        ).count(),
    }


def test_counters_equal_the_database_and_reruns_add_nothing(metrics):
    before = metrics()
    call_command("seed_demo", issues=400, stdout=io.StringIO())
    change = delta(metrics(), before)
    truth = _truth()

    assert Issue.objects.count() == 400
    assert change.total("tamma_metrics_errors_total") == 0  # every event was valid
    assert change.series("tamma_issues_processed_total") == truth["tamma_issues_processed_total"]
    for name in (
        "tamma_prs_created_total",
        "tamma_prs_merged_total",
        "tamma_escalations_total",
        "tamma_approval_wait_duration_seconds_count",
        "tamma_change_lead_time_seconds_count",
        "tamma_incidents_total",
        "tamma_failed_deployment_recovery_seconds_count",
    ):
        assert change.total(name) == truth[name], name
    # Delivery: deployments by outcome (a rolled-back one was deployed first), the stages.
    deployed = Deployment.objects.filter(status__in=Deployment.DEPLOYED).count()
    for outcome, rows in (
        ("success", deployed),
        ("failure", Deployment.objects.filter(status="failed").count()),
        ("rolled_back", Deployment.objects.filter(status="rolled_back").count()),
    ):
        assert rows > 0, outcome
        assert change.total("tamma_deployments_total", outcome=outcome) == rows, outcome
    merged = PullRequest.objects.filter(status="merged")
    stages = "tamma_pr_stage_duration_seconds_count"
    assert change.total(stages, stage="coding") == merged.count()
    assert change.total(stages, stage="merge") == merged.exclude(approved_at=None).count()
    assert change.total(stages, stage="deploy") == merged.exclude(deployed_at=None).count()
    assert Incident.objects.exclude(deployment=None).count() == Incident.objects.count() > 0
    assert PullRequest.objects.filter(is_revert=True).exists()
    # Varied data: every status, several providers and platforms, PRs, approvals, loops.
    assert set(Issue.objects.values_list("status", flat=True)) == set(Issue.Status.values)
    assert Issue.objects.values("provider").distinct().count() >= 5
    assert Issue.objects.values("platform").distinct().count() == 5
    assert Approval.objects.filter(status="pending").exists()
    assert AutonomousLoop.objects.count() == 8
    assert change.total("tamma_ai_requests_total") > 400
    # Each issue holds what its AI requests cost; per provider, rows equal the counter.
    for provider, cost in Issue.objects.values_list("provider").annotate(cost=Sum("cost_usd")):
        counted = change.total("tamma_ai_cost_usd_total", provider=provider)
        assert counted == pytest.approx(float(cost), abs=1e-6), provider
    answered = Escalation.objects.exclude(resolved_at=None)
    assert 0 < answered.count() < Escalation.objects.count()
    assert not answered.filter(resolved_at__lt=F("created_at")).exists()
    assert change.total("tamma_issue_completion_duration_seconds_count") == sum(
        truth["tamma_issues_processed_total"].values()
    )

    rerun_before = metrics()
    call_command("seed_demo", issues=400, stdout=io.StringIO())
    assert Issue.objects.count() == 400
    assert not delta(metrics(), rerun_before).series("tamma_issues_processed_total")

    call_command("seed_demo", issues=450, stdout=io.StringIO())
    assert Issue.objects.count() == 450


def test_nothing_happens_in_the_future_or_backwards():
    call_command("seed_demo", issues=2000, stdout=io.StringIO())
    now = timezone.now()
    for model, fields in (
        (Issue, ("created_at", "started_at", "completed_at")),
        (
            PullRequest,
            ("created_at", "merged_at", "first_review_at", "approved_at", "deployed_at"),
        ),
        (Deployment, ("started_at", "finished_at")),
        (Incident, ("opened_at", "resolved_at")),
        (Approval, ("requested_at", "decided_at")),
        (Escalation, ("created_at",)),
    ):
        for field in fields:
            assert not model.objects.filter(**{f"{field}__gt": now}).exists(), (model, field)
    assert not Issue.objects.filter(started_at__gt=F("completed_at")).exists()
    assert not Issue.objects.filter(created_at__gt=F("started_at")).exists()
    assert not Approval.objects.filter(requested_at__gt=F("decided_at")).exists()
    assert not PullRequest.objects.filter(first_commit_at__gt=F("created_at")).exists()
    assert not PullRequest.objects.filter(approved_at__gt=F("merged_at")).exists()
    assert not PullRequest.objects.filter(merged_at__gt=F("deployed_at")).exists()
    assert not Deployment.objects.filter(started_at__gt=F("finished_at")).exists()
    assert not Incident.objects.filter(opened_at__gt=F("resolved_at")).exists()


def test_reset_recreates_the_same_rows():
    call_command("seed_demo", issues=120, stdout=io.StringIO())
    first = list(
        Issue.objects.order_by("external_id").values_list(
            "external_id", "status", "provider", "priority"
        )
    )
    call_command("seed_demo", issues=120, reset=True, stdout=io.StringIO())
    again = list(
        Issue.objects.order_by("external_id").values_list(
            "external_id", "status", "provider", "priority"
        )
    )
    assert first == again
    assert Issue.objects.count() == 120


def test_tamma_takes_over_the_seeded_rows_through_the_state_api(metrics):
    """The demo's rows carry the natural keys Tamma sends, so the state API finds them:
    an issue awaiting approval is decided and ends, counted once; a seeded escalation
    sent again changes nothing."""
    call_command("seed_demo", issues=200, stdout=io.StringIO())
    tamma = client_of(ORCHESTRATOR, "tamma")

    def post(path: str, item: dict) -> list[str]:
        body = json.dumps({"items": [item]})
        answer = tamma.post(f"/api/v1/{path}", body, content_type="application/json")
        return [r["status"] for r in answer.json()["results"]]

    waiting = Approval.objects.filter(status="pending").select_related("issue").first()
    assert waiting is not None
    issue = waiting.issue
    key = {"platform": issue.platform, "repository": issue.repository}
    now = timezone.now().replace(microsecond=0).isoformat()
    before = metrics()
    approval = {
        **key,
        "issue_external_id": issue.external_id,
        "external_id": waiting.external_id,
        "approval_type": waiting.approval_type,
        "priority": waiting.priority,
        "requested_at": waiting.requested_at.isoformat(),
        "status": "approved",
        "observed_at": now,
    }
    assert post("approvals", approval) == ["updated"]
    ended = {
        **key,
        "external_id": issue.external_id,
        "issue_type": issue.issue_type,
        "complexity": issue.complexity,
        "priority": issue.priority,
        "provider": issue.provider,
        "status": "succeeded",
        "created_at": issue.created_at.isoformat(),
        "started_at": issue.started_at.isoformat(),
        "observed_at": now,
    }
    assert post("issues", ended) == ["updated"]
    assert post("issues", ended) == ["unchanged"]
    seeded = Escalation.objects.exclude(issue=None).select_related("issue").first()
    assert seeded is not None
    again = {
        "external_id": seeded.external_id,
        "platform": seeded.issue.platform,
        "repository": seeded.issue.repository,
        "issue_external_id": seeded.issue.external_id,
        "escalation_type": seeded.escalation_type,
        "severity": seeded.severity,
        "component": seeded.component,
        "reason": seeded.reason,
        "created_at": seeded.created_at.isoformat(),
        "observed_at": now,
    }
    assert post("escalations", again) == ["unchanged"]

    change = delta(metrics(), before)
    assert change.total("tamma_issues_processed_total", outcome="success") == 1
    assert change.total("tamma_approval_wait_duration_seconds_count", outcome="approved") == 1
    assert change.total("tamma_escalations_total") == 0
    issue.refresh_from_db()
    assert issue.status == "succeeded"


def test_pending_approvals_are_fresh_but_one_so_health_reads_like_a_working_team():
    """The pending approvals waited as long as the decided ones do (median half an hour),
    at most six hours, except the first issue's, which has waited 20 hours: an old one,
    under the 24-hour rule, so the demo does not open on critical."""
    before = timezone.now().replace(microsecond=0)  # the command's "now" is not earlier
    call_command("seed_demo", issues=400, stdout=io.StringIO())
    after = timezone.now()  # nor later

    pending = list(Approval.objects.filter(status="pending").order_by("requested_at"))
    assert len(pending) >= 10
    old, *fresh = pending
    waiting = Issue.objects.filter(status="awaiting_approval").values_list("external_id", "pk")
    first = min(waiting, key=lambda row: int(row[0]))
    assert old.issue_id == first[1]  # the first issue awaiting approval
    assert before - timedelta(hours=20) <= old.requested_at <= after - timedelta(hours=20)
    for approval in fresh:
        assert approval.requested_at >= before - timedelta(hours=6), approval
    within_an_hour = [a for a in fresh if a.requested_at >= after - timedelta(hours=1)]
    assert len(within_an_hour) > len(fresh) / 2  # the median wait is under an hour
    # The work came first: started, pull request opened, then the approval requested.
    for approval in pending:
        issue = Issue.objects.get(pk=approval.issue_id)
        assert issue.created_at < issue.started_at < approval.requested_at
        for pr in issue.pull_requests.all():
            assert pr.created_at <= approval.requested_at

    report = health.health()
    assert report["status"] != health.CRITICAL
    assert not [r for r in report["reasons"] if r["about"] == "pending_approvals"]
    ages = sorted(row["oldest_age_seconds"] for row in report["approvals"] if row["pending"])
    assert ages[-1] >= 20 * 3600 > 7 * 3600 > ages[-2]  # read a moment after the seed
