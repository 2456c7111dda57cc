"""Model lifecycle -> counters and histograms: once per transition, after commit only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tamma_metrics import record, transitions
from tamma_metrics.models import Approval, Issue, PullRequest
from tests import factories
from tests.utils import delta

pytestmark = pytest.mark.django_db(transaction=True)

ISSUE_LABELS = {"provider": "anthropic", "platform": "github", "issue_type": "bug"}


def test_issue_lifecycle_counts_once_with_exact_duration(metrics):
    before = metrics()
    issue = factories.issue()
    issue.status = Issue.Status.IN_PROGRESS
    issue.started_at = timezone.now() - timedelta(seconds=1234.5)
    issue.save()
    issue.status = Issue.Status.SUCCEEDED
    issue.save()
    issue.save()  # the same status again: no second count
    Issue.objects.get(pk=issue.pk).save()  # another in-memory copy: still no count
    change = delta(metrics(), before)

    assert change.value("tamma_issues_processed_total", **ISSUE_LABELS, outcome="success") == 1
    assert change.total("tamma_issues_processed_total") == 1
    hist = {**ISSUE_LABELS, "complexity": "medium"}
    assert change.value("tamma_issue_completion_duration_seconds_count", **hist) == 1
    issue.refresh_from_db()
    expected = (issue.completed_at - issue.started_at).total_seconds()
    assert change.value("tamma_issue_completion_duration_seconds_sum", **hist) == pytest.approx(
        expected
    )
    assert change.value("tamma_issue_completion_duration_seconds_bucket", **hist, le="900.0") == 0
    assert change.value("tamma_issue_completion_duration_seconds_bucket", **hist, le="1800.0") == 1


def test_stale_copies_of_one_row_count_its_transition_once(metrics):
    """Two copies loaded before either saves: the second save's UPDATE finds the row no
    longer in the status it was loaded with, reads it again and counts nothing."""
    issue = factories.issue(status="in_progress")
    first, second = Issue.objects.get(pk=issue.pk), Issue.objects.get(pk=issue.pk)
    before = metrics()
    first.status = second.status = Issue.Status.SUCCEEDED
    first.save()
    second.save()
    second.status = Issue.Status.FAILED
    second.save()  # a correction from one terminal status to another: not counted
    change = delta(metrics(), before)
    assert change.value("tamma_issues_processed_total", **ISSUE_LABELS, outcome="success") == 1
    assert change.total("tamma_issues_processed_total") == 1
    assert Issue.objects.get(pk=issue.pk).status == "failed"


def test_a_copy_built_without_loading_reads_the_stored_status(metrics):
    issue = factories.issue(status="in_progress")
    before = metrics()
    copy = Issue(**{f.attname: getattr(issue, f.attname) for f in Issue._meta.concrete_fields})
    copy.status = Issue.Status.SUCCEEDED
    copy.save()
    Issue(**{f.attname: getattr(copy, f.attname) for f in Issue._meta.concrete_fields}).save()
    change = delta(metrics(), before)
    assert change.value("tamma_issues_processed_total", **ISSUE_LABELS, outcome="success") == 1
    assert change.total("tamma_issues_processed_total") == 1


def test_a_status_set_in_memory_but_not_saved_counts_nothing(metrics):
    issue = factories.issue(status="in_progress")
    before = metrics()
    issue.status = Issue.Status.SUCCEEDED
    issue.save(update_fields=["priority"])  # the status column is not written
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 0
    assert Issue.objects.get(pk=issue.pk).status == "in_progress"
    issue.save()
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 1


def test_a_save_rolled_back_leaves_the_transition_to_the_next_save(metrics):
    issue = factories.issue(status="in_progress")
    before = metrics()
    issue.status = Issue.Status.SUCCEEDED
    with pytest.raises(RuntimeError), transaction.atomic():
        issue.save()
        raise RuntimeError("roll back")
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 0
    issue.save()  # the row is in_progress again: this save makes the transition
    change = delta(metrics(), before)
    assert change.value("tamma_issues_processed_total", **ISSUE_LABELS, outcome="success") == 1


def test_a_status_changing_save_adds_no_query_on_its_row():
    """The status a save replaced comes from its own UPDATE, not from a read before it
    (the counters' label admission, on commit, has queries of its own)."""

    def statements_on_the_row(row: Issue, status: str) -> list[str]:
        row.status = status
        with CaptureQueriesContext(connection) as queries:
            row.save()
        return [q["sql"].split()[0] for q in queries if '"tamma_metrics_issue"' in q["sql"]]

    created = factories.issue(status="in_progress", started_at=timezone.now())
    assert statements_on_the_row(created, "succeeded") == ["UPDATE"]
    assert statements_on_the_row(Issue.objects.get(pk=created.pk), "failed") == ["UPDATE"]
    # A copy loaded before the last save: its UPDATE finds nothing, so it reads and retries.
    stale = Issue.objects.get(pk=created.pk)
    created.status = "in_progress"
    created.save()
    assert statements_on_the_row(stale, "succeeded") == ["UPDATE", "SELECT", "UPDATE"]


@pytest.mark.parametrize(("status", "outcome"), [("failed", "failure"), ("timed_out", "timeout")])
def test_issue_created_in_terminal_status_counts(metrics, status, outcome):
    before = metrics()
    factories.issue(status=status)
    change = delta(metrics(), before)
    assert change.value("tamma_issues_processed_total", **ISSUE_LABELS, outcome=outcome) == 1
    assert change.total("tamma_issues_processed_total") == 1


def test_cancelled_and_non_terminal_statuses_count_nothing(metrics):
    before = metrics()
    issue = factories.issue()
    for status in ("in_progress", "awaiting_approval", "cancelled"):
        issue.status = status
        issue.save()
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 0


def test_terminal_to_terminal_correction_does_not_count_again(metrics):
    issue = factories.issue(status="succeeded")
    before = metrics()
    issue.status = Issue.Status.FAILED
    issue.save()
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 0


def test_rolled_back_transaction_counts_nothing(metrics):
    before = metrics()
    with pytest.raises(RuntimeError), transaction.atomic():
        factories.issue(status="succeeded")
        factories.escalation()
        raise RuntimeError("roll back")
    assert Issue.objects.count() == 0
    change = delta(metrics(), before)
    assert change.total("tamma_issues_processed_total") == 0
    assert change.total("tamma_escalations_total") == 0


def test_rolled_back_savepoint_counts_nothing_but_the_outer_commit_counts(metrics):
    before = metrics()
    with transaction.atomic():
        factories.issue(status="failed")
        try:
            with transaction.atomic():
                factories.issue(status="succeeded")
                raise RuntimeError("roll back the savepoint only")
        except RuntimeError:
            pass
        # Not counted before the commit.
        assert delta(metrics(), before).total("tamma_issues_processed_total") == 0
    change = delta(metrics(), before)
    assert change.value("tamma_issues_processed_total", **ISSUE_LABELS, outcome="failure") == 1
    assert change.total("tamma_issues_processed_total") == 1


def test_pull_request_created_then_merged_once(metrics):
    issue = factories.issue(provider="openai", issue_type="feature")
    before = metrics()
    pr = factories.pull_request(issue, actor="user")
    pr.status = PullRequest.Status.MERGED
    pr.merge_strategy = "rebase"
    pr.save()
    pr.save()
    change = delta(metrics(), before)
    labels = {"provider": "openai", "platform": "github", "issue_type": "feature"}
    assert change.value("tamma_prs_created_total", **labels, actor="user") == 1
    assert change.value("tamma_prs_merged_total", **labels, merge_strategy="rebase") == 1
    assert change.total("tamma_prs_created_total") == 1
    assert change.total("tamma_prs_merged_total") == 1


def test_pull_request_created_merged_counts_both(metrics):
    issue = factories.issue()
    before = metrics()
    factories.pull_request(issue, status="merged", merge_strategy="squash")
    change = delta(metrics(), before)
    assert change.total("tamma_prs_created_total") == 1
    assert change.value("tamma_prs_merged_total", **ISSUE_LABELS, merge_strategy="squash") == 1


def test_escalation_created_counts_with_its_labels(metrics):
    before = metrics()
    escalation = factories.escalation(severity="critical", reason="secret_detected")
    escalation.save()  # updates count nothing
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_escalations_total",
            escalation_type="blocked",
            severity="critical",
            component="orchestrator",
            reason="secret_detected",
        )
        == 1
    )
    assert change.total("tamma_escalations_total") == 1


def test_approval_decided_observes_the_wait(metrics):
    issue = factories.issue()
    requested = timezone.now() - timedelta(hours=2)
    approval = factories.approval(issue, approval_type="merge", requested_at=requested)
    before = metrics()
    approval.status = Approval.Status.REJECTED
    approval.decided_at = requested + timedelta(seconds=4000)
    approval.save()
    approval.save()
    change = delta(metrics(), before)
    labels = {"approval_type": "merge", "outcome": "rejected"}
    assert change.value("tamma_approval_wait_duration_seconds_count", **labels) == 1
    assert change.value("tamma_approval_wait_duration_seconds_sum", **labels) == pytest.approx(4000)
    assert change.value("tamma_approval_wait_duration_seconds_bucket", **labels, le="3600.0") == 0
    assert change.value("tamma_approval_wait_duration_seconds_bucket", **labels, le="14400.0") == 1


def test_failing_metrics_code_never_breaks_the_save(metrics, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("metrics bug")

    before = metrics()
    monkeypatch.setitem(transitions.BY_MODEL, Issue, broken)
    issue = factories.issue(status="succeeded")  # the receiver raises inside
    assert Issue.objects.filter(pk=issue.pk, status="succeeded").exists()
    monkeypatch.undo()

    monkeypatch.setattr(record, "_child", broken)
    factories.issue(status="failed")  # record raises inside the on_commit callback
    assert Issue.objects.count() == 2
    change = delta(metrics(), before)
    assert change.value("tamma_metrics_errors_total", stage="receiver") == 1
    assert change.value("tamma_metrics_errors_total", stage="record") == 1
    assert change.total("tamma_issues_processed_total") == 0
    assert "metrics bug" in caplog.text


def test_queryset_update_is_documented_as_uncounted(metrics):
    # update() sends no signals: the receivers cannot see it (see receivers.py).
    factories.issue()
    before = metrics()
    Issue.objects.update(status="succeeded")
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 0
