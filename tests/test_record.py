"""The recording API and its timers: exact values, outcomes, failures swallowed."""

from __future__ import annotations

import errno
import math
import os

import pytest

from tamma_metrics import catalogue, record
from tests.utils import delta

pytestmark = pytest.mark.django_db

AI = {"provider": "anthropic", "model": "claude-sonnet", "request_type": "chat"}


def test_ai_request_counts_latency_tokens_and_cost(metrics):
    before = metrics()
    record.ai_request(
        **AI,
        outcome="success",
        duration_seconds=12.5,
        tokens={"input": 1200, "output": 300, "cache_read": 0},
        cost_usd=0.021,
    )
    change = delta(metrics(), before)
    assert change.value("tamma_ai_requests_total", **AI, outcome="success") == 1
    hist = {**AI, "token_range": "1k-10k"}
    assert change.value("tamma_ai_request_duration_seconds_count", **hist) == 1
    assert change.value("tamma_ai_request_duration_seconds_sum", **hist) == pytest.approx(12.5)
    assert change.value("tamma_ai_request_duration_seconds_bucket", **hist, le="10.0") == 0
    assert change.value("tamma_ai_request_duration_seconds_bucket", **hist, le="20.0") == 1
    tokens = {"provider": "anthropic", "model": "claude-sonnet"}
    assert change.value("tamma_ai_tokens_total", **tokens, token_type="input") == 1200
    assert change.value("tamma_ai_tokens_total", **tokens, token_type="output") == 300
    assert change.total("tamma_ai_tokens_total") == 1500  # zero counts add no series
    assert change.value("tamma_ai_cost_usd_total", **tokens) == pytest.approx(0.021)


def test_every_event_family_records(metrics):
    before = metrics()
    record.test_execution(
        test_type="unit",
        framework="pytest",
        language="python",
        result="success",
        duration_seconds=42,
    )
    record.code_generation(
        provider="openai", language="go", complexity="high", file_count=7, duration_seconds=90
    )
    record.code_change(change_type="update", language="go", actor="system", file_type="go", count=7)
    record.escalation(
        escalation_type="budget", severity="high", component="ai_gateway", reason="token_budget"
    )
    record.pr_created(provider="openai", platform="gitlab", issue_type="bug", actor="system")
    record.pr_merged(
        provider="openai", platform="gitlab", issue_type="bug", merge_strategy="squash"
    )
    record.issue_processed(
        provider="openai",
        platform="gitlab",
        issue_type="bug",
        outcome="success",
        complexity="low",
        duration_seconds=600,
    )
    record.approval_decided(approval_type="merge", outcome="approved", wait_seconds=120)
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_test_execution_duration_seconds_sum",
            test_type="unit",
            framework="pytest",
            language="python",
            result="success",
        )
        == 42
    )
    assert (
        change.value(
            "tamma_code_generation_duration_seconds_count",
            provider="openai",
            language="go",
            complexity="high",
            file_count="6-20",
        )
        == 1
    )
    assert (
        change.value(
            "tamma_code_changes_total",
            change_type="update",
            language="go",
            actor="system",
            file_type="go",
        )
        == 7
    )
    assert change.total("tamma_escalations_total") == 1
    assert change.total("tamma_prs_created_total") == 1
    assert change.total("tamma_prs_merged_total") == 1
    assert (
        change.value(
            "tamma_issues_processed_total",
            provider="openai",
            platform="gitlab",
            issue_type="bug",
            outcome="success",
        )
        == 1
    )
    assert (
        change.value(
            "tamma_issue_completion_duration_seconds_sum",
            provider="openai",
            platform="gitlab",
            issue_type="bug",
            complexity="low",
        )
        == 600
    )
    assert (
        change.value(
            "tamma_approval_wait_duration_seconds_sum", approval_type="merge", outcome="approved"
        )
        == 120
    )


def test_ai_timer_records_success_with_what_the_block_set(metrics):
    before = metrics()
    with record.time_ai_request(**AI) as timer:
        timer.tokens = {"input": 50_000, "output": 60_000}
        timer.cost_usd = 1.5
    change = delta(metrics(), before)
    assert change.value("tamma_ai_requests_total", **AI, outcome="success") == 1
    assert change.value("tamma_ai_request_duration_seconds_count", **AI, token_range="100k+") == 1
    assert change.value(
        "tamma_ai_request_duration_seconds_sum", **AI, token_range="100k+"
    ) == pytest.approx(timer.duration_seconds)
    assert change.value(
        "tamma_ai_cost_usd_total", provider="anthropic", model="claude-sonnet"
    ) == pytest.approx(1.5)


@pytest.mark.parametrize(("error", "outcome"), [(ValueError, "failure"), (TimeoutError, "timeout")])
def test_timers_record_failure_and_timeout_and_reraise(metrics, error, outcome):
    before = metrics()
    with pytest.raises(error), record.time_ai_request(**AI):
        raise error("provider said no")
    with (
        pytest.raises(error),
        record.time_test_execution(test_type="e2e", framework="playwright", language="typescript"),
    ):
        raise error("tests hung")
    change = delta(metrics(), before)
    assert change.value("tamma_ai_requests_total", **AI, outcome=outcome) == 1
    assert change.total("tamma_ai_requests_total") == 1
    assert (
        change.value(
            "tamma_test_execution_duration_seconds_count",
            test_type="e2e",
            framework="playwright",
            language="typescript",
            result=outcome,
        )
        == 1
    )


def test_code_generation_timer_buckets_the_file_count(metrics):
    before = metrics()
    with record.time_code_generation(provider="local", language="rust", complexity="low") as timer:
        timer.file_count = 3
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_code_generation_duration_seconds_count",
            provider="local",
            language="rust",
            complexity="low",
            file_count="2-5",
        )
        == 1
    )


def test_track_connection_is_a_live_gauge(metrics):
    labels = {"connection_type": "websocket", "provider": "github"}
    before = metrics().value("tamma_active_connections", **labels)
    with record.track_connection(**labels):
        assert metrics().value("tamma_active_connections", **labels) == before + 1
    assert metrics().value("tamma_active_connections", **labels) == before


@pytest.mark.parametrize(
    "bad",
    [
        {"duration_seconds": -1},
        {"duration_seconds": float("nan")},
        {"duration_seconds": float("inf")},
        {"duration_seconds": 1, "tokens": {"thinking": 5}},
        {"duration_seconds": 1, "tokens": {"input": -5}},
        {"duration_seconds": 1, "cost_usd": -0.5},
        # Past what one request can report: nothing of the event is recorded.
        {"duration_seconds": 1, "cost_usd": 1e308},
        {"duration_seconds": 1, "cost_usd": 1000.01},
        {"duration_seconds": 1, "tokens": {"input": 10**30}},
        {"duration_seconds": 1, "tokens": {"input": int("9" * 400)}},
        {"duration_seconds": 1, "tokens": {"input": 5, "output": 10_000_001}},
        {"duration_seconds": 1, "tokens": {"input": 2.5}},
        {"duration_seconds": 30 * 86400 + 1},
    ],
)
def test_invalid_values_are_counted_as_rejections_not_raised_nor_recorded(metrics, bad, caplog):
    before = metrics()
    record.ai_request(**AI, outcome="success", **bad)  # must not raise
    change = delta(metrics(), before)
    assert change.total("tamma_ai_requests_total") == 0
    assert change.total("tamma_ai_tokens_total") == 0
    assert change.total("tamma_ai_cost_usd_total") == 0
    assert change.value("tamma_metrics_errors_total", stage="rejected") == 1
    assert "ai_request not recorded" in caplog.text


def test_the_largest_values_allowed_are_recorded_exactly(metrics):
    before = metrics()
    record.ai_request(
        **AI, outcome="success", duration_seconds=30 * 86400,
        tokens={"input": 10_000_000}, cost_usd=1000,
    )  # fmt: skip
    change = delta(metrics(), before)
    assert change.total("tamma_ai_tokens_total") == 10_000_000
    assert change.total("tamma_ai_cost_usd_total") == pytest.approx(1000)  # a float counter
    assert change.value("tamma_metrics_errors_total", stage="rejected") == 0


def test_no_number_of_reports_makes_a_counter_infinite(metrics):
    for _ in range(3):
        record.ai_request(**AI, outcome="success", duration_seconds=1, cost_usd=1e308)
        record.code_change(
            change_type="create", language="python", actor="system", file_type="py", count=10**400
        )
    samples = metrics()
    assert all(math.isfinite(value) for value in samples.values())
    assert samples.value("tamma_metrics_errors_total", stage="rejected") >= 6


def test_limits_are_settings(metrics, settings):
    settings.TAMMA_METRICS = {"MAX_EVENT_VALUES": {"cost_usd": 5}}
    before = metrics()
    record.ai_request(**AI, outcome="success", duration_seconds=1, cost_usd=6)
    record.ai_request(**AI, outcome="success", duration_seconds=1, cost_usd=5)
    change = delta(metrics(), before)
    assert change.total("tamma_ai_cost_usd_total") == 5
    assert change.value("tamma_metrics_errors_total", stage="rejected") == 1


def test_hostile_label_values_become_safe(metrics):
    before = metrics()
    record.escalation(
        escalation_type="Blocked\n", severity="HIGH", component='a"b\\c\ud800', reason="x" * 500
    )
    change = delta(metrics(), before)
    series = change.series("tamma_escalations_total")
    assert [dict(labels) for labels in series] == [
        {"escalation_type": "blocked", "severity": "high", "component": "a_b_c", "reason": "x" * 64}
    ]
    assert list(series.values()) == [1]


def test_range_helpers():
    assert [catalogue.token_range(n) for n in (0, 999, 1000, 99_999, 100_000)] == [
        "0-1k",
        "0-1k",
        "1k-10k",
        "10k-100k",
        "100k+",
    ]
    assert [catalogue.file_count_range(n) for n in (0, 1, 2, 5, 6, 20, 21)] == [
        "0",
        "1",
        "2-5",
        "2-5",
        "6-20",
        "6-20",
        "21+",
    ]


def test_only_transitions_count_the_domain():
    """No path counts a domain event that no row holds: the domain's recording functions
    are not public, and in the app and the demo site only transitions.py calls them."""
    import re
    from pathlib import Path

    assert not set(record.DOMAIN) & set(record.__all__)
    assert all(callable(getattr(record, name)) for name in record.DOMAIN)
    call = re.compile(rf"record\.({'|'.join(record.DOMAIN)})\b")
    root = Path(record.__file__).resolve().parents[1]
    callers = {
        str(path.relative_to(root))
        for folder in ("tamma_metrics", "project")
        for path in (root / folder).rglob("*.py")
        if call.search(path.read_text())
    }
    assert callers == {"tamma_metrics/transitions.py"}


def _folder_full(*args: object, **kwargs: object) -> None:
    """What a new series raises when its multiprocess file cannot grow (mmap_guard)."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.django_db(transaction=True)
def test_a_full_folder_loses_whole_events_counts_each_and_logs_once(
    metrics, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    from tamma_metrics import selfmetrics
    from tamma_metrics.models import Issue
    from tests import factories

    issue = factories.issue(status=Issue.Status.IN_PROGRESS, provider="disk-full")
    before = metrics()
    monkeypatch.setattr(selfmetrics, "_disk_told", False)
    # Every series a miss looks up fails, as when the folder's file cannot grow; the
    # first series of an event is found (cached), the second is new.
    record.ai_request(**AI, outcome="success", duration_seconds=1.0, tokens={"input": 1})
    monkeypatch.setattr(record, "_guarded_series", _folder_full)
    for n in range(3):
        record.ai_request(
            **AI, outcome="success", duration_seconds=1.0, tokens={"input": 1, "output": n + 1}
        )
    record.code_change(change_type="create", language="go", actor="system", file_type="disk")
    issue.status = Issue.Status.SUCCEEDED
    with django_capture_on_commit_callbacks(execute=True):
        issue.save()  # a model save: its counter is lost, the save is not
    monkeypatch.undo()  # the scrape below records its own request
    change = delta(metrics(), before)

    assert change.value("tamma_metrics_errors_total", stage="disk") == 5
    assert change.value("tamma_metrics_errors_total", stage="record") == 0
    assert change.value("tamma_metrics_errors_total", stage="receiver") == 0
    # Whole events or nothing: the first event's series were cached, so it counted in
    # full; the three that needed a new series (the output tokens) wrote nothing at all.
    assert change.value("tamma_ai_requests_total", **AI, outcome="success") == 1
    assert change.total("tamma_ai_request_duration_seconds_count") == 1
    assert change.total("tamma_ai_tokens_total") == 1
    assert change.total("tamma_code_changes_total") == 0
    assert change.total("tamma_issues_processed_total") == 0
    assert Issue.objects.get(pk=issue.pk).status == Issue.Status.SUCCEEDED
    assert caplog.text.count("the multiprocess folder is full or read-only") == 1
    assert "Traceback" not in caplog.text
