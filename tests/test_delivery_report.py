"""The delivery report on a fixed scenario whose four keys, bands, stages, costs and waits
were worked out by hand (the comment above each figure says how), in two time zones whose
day boundaries put a deployment in different windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from tamma_metrics.models import Approval, Deployment, Escalation, Incident, Issue, PullRequest
from tamma_metrics.reports import delivery
from tamma_metrics.roles import PRODUCT_MANAGER, WORKER, seed_roles
from tests.utils import client_of, staff_client

pytestmark = pytest.mark.django_db

# Noon UTC on a Saturday: 21:00 in Tokyo. The 7-day window starts at 2026-11-29T00:00Z
# in UTC, and at 2026-11-28T15:00Z (midnight in Tokyo) there.
NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
TOKYO = "Asia/Tokyo"
H, D = timedelta(hours=1), timedelta(days=1)
WHERE = {"platform": "github", "repository": "acme/shop"}


def pr(issue: Issue, number: int, **times) -> PullRequest:
    return PullRequest.objects.create(issue=issue, number=number, status="merged", **WHERE, **times)


def deploy(external_id: str, status: str, finished, *shipped, environment="production"):
    row = Deployment.objects.create(
        **WHERE,
        external_id=external_id,
        environment=environment,
        status=status,
        started_at=finished - 10 * timedelta(minutes=1),
        finished_at=finished,
    )
    row.pull_requests.add(*shipped)
    for one in shipped:
        if status in Deployment.DEPLOYED and environment == "production":
            PullRequest.objects.filter(pk=one.pk).update(deployed_at=finished)
    return row


@pytest.fixture
def scenario():
    # $12 of AI work, shared by its four pull requests: $3 each.
    issue = Issue.objects.create(
        **WHERE, external_id="1", issue_type="feature", provider="anthropic", status="succeeded",
        cost_usd=12,
    )  # fmt: skip
    other = Issue.objects.create(
        **WHERE, external_id="2", issue_type="bug", provider="openai", status="in_progress",
        cost_usd="5.5",
    )  # fmt: skip
    # The previous window: one deployment, a change with a 200 h lead time.
    pr0 = pr(issue, 10, first_commit_at=NOW - 10 * D - 200 * H, created_at=NOW - 10 * D - 20 * H,
             merged_at=NOW - 10 * D - H)  # fmt: skip
    deploy("d0", "succeeded", NOW - 10 * D, pr0)
    # This window: lead times 10 h, 30 h (from the opening) and 2 h.
    pr1 = pr(issue, 1, first_commit_at=NOW - 6 * D - 10 * H, created_at=NOW - 6 * D - 9 * H,
             first_review_at=NOW - 6 * D - 7 * H, approved_at=NOW - 6 * D - 5 * H,
             merged_at=NOW - 6 * D - 4 * H)  # fmt: skip
    pr2 = pr(issue, 2, created_at=NOW - 5 * D - 30 * H, merged_at=NOW - 5 * D - H)
    pr3 = pr(issue, 3, first_commit_at=NOW - 3 * D - 2 * H, created_at=NOW - 3 * D - 1.5 * H,
             merged_at=NOW - 3 * D - H)  # fmt: skip
    deploy("d1", "succeeded", NOW - 6 * D, pr1)
    deploy("d2", "succeeded", NOW - 5 * D, pr2)
    deploy("d3", "failed", NOW - 4 * D)
    deploy("d4", "rolled_back", NOW - 3 * D, pr3)
    d5 = deploy("d5", "succeeded", NOW - 2 * D)
    deploy("s1", "succeeded", NOW - D, environment="staging")  # not production: left out
    # Recoveries of 2 h (caused by d5) and 30 minutes.
    Incident.objects.create(**WHERE, external_id="i1", status="resolved", deployment=d5,
                            opened_at=NOW - 2 * D + H, resolved_at=NOW - 2 * D + 3 * H)  # fmt: skip
    Incident.objects.create(**WHERE, external_id="i2", status="resolved",
                            opened_at=NOW - D, resolved_at=NOW - D + 0.5 * H)  # fmt: skip
    # At 2026-11-28T20:00Z: the previous window in UTC, this one in Tokyo (05:00 on the
    # 29th there); a lead time of 4 h, coding 1 h, deploy 2 h.
    edge = datetime(2026, 11, 28, 20, tzinfo=UTC)
    pr6 = pr(other, 6, first_commit_at=edge - 4 * H, created_at=edge - 3 * H,
             merged_at=edge - 2 * H)  # fmt: skip
    deploy("d6", "succeeded", edge, pr6)


def test_the_four_keys_and_their_bands_for_the_window_and_the_one_before(
    scenario, django_assert_num_queries
):
    with django_assert_num_queries(15):
        report = delivery.delivery(7, now=NOW)
    assert report["window"] == {
        "days": 7,
        "since": "2026-11-29T00:00:00+00:00",
        "until": "2026-12-05T12:00:00+00:00",
        "time_zone": "UTC",
    }
    keys = report["keys"]
    # d1, d2, d4 (rolled back: it was deployed) and d5 in 7 days; d3 failed.
    assert keys["deployment_frequency"] == {"value": round(4 / 7, 4), "band": "high"}
    # Of d1..d5, d3 failed, d4 was rolled back and d5 caused an incident.
    assert keys["change_failure_rate"] == {"value": 0.6, "band": "low"}
    # Median of 2, 10 and 30 hours.
    assert keys["lead_time_hours"] == {"value": 10.0, "band": "elite"}
    # Nearest-rank median of 0.5 and 2 hours: the first.
    assert keys["recovery_time_hours"] == {"value": 0.5, "band": "elite"}
    assert (keys["deployments"], keys["deployments_finished"], keys["failed_deployments"]) == (
        4,
        5,
        3,
    )
    assert (keys["changes_deployed"], keys["incidents_resolved"]) == (3, 2)

    # d0 and d6 (20:00 UTC on the 28th); lead times 200 h and 4 h: the lower median.
    previous = report["previous_keys"]
    assert previous["deployment_frequency"] == {"value": round(2 / 7, 4), "band": "high"}
    assert previous["change_failure_rate"] == {"value": 0.0, "band": "elite"}
    assert previous["lead_time_hours"] == {"value": 4.0, "band": "elite"}
    assert previous["recovery_time_hours"] == {"value": None, "band": None}
    # One a day at noon from the 29th; d3 failed, d4 was rolled back, d5 caused i1.
    assert [(d["day"][5:], d["deployed"], d["failed"]) for d in report["deployments_per_day"]] == [
        ("11-29", 1, 0),
        ("11-30", 1, 0),
        ("12-01", 0, 1),
        ("12-02", 1, 1),
        ("12-03", 1, 1),
        ("12-04", 0, 0),
        ("12-05", 0, 0),
    ]


def test_in_tokyo_the_window_starts_nine_hours_earlier(scenario):
    with timezone.override(TOKYO):
        report = delivery.delivery(7, now=NOW)
    assert (report["window"]["since"], report["window"]["time_zone"]) == (
        "2026-11-29T00:00:00+09:00",
        TOKYO,
    )
    keys = report["keys"]
    # d6 (05:00 on the 29th in Tokyo) joins: d1, d2, d4, d5, d6 deployed of six finished.
    assert keys["deployment_frequency"] == {"value": round(5 / 7, 4), "band": "high"}
    assert keys["change_failure_rate"] == {"value": 0.5, "band": "low"}
    # Median of 2, 4, 10 and 30 hours: the second.
    assert keys["lead_time_hours"] == {"value": 4.0, "band": "elite"}
    assert keys["recovery_time_hours"] == {"value": 0.5, "band": "elite"}
    previous = report["previous_keys"]
    assert previous["deployment_frequency"] == {"value": round(1 / 7, 4), "band": "high"}
    assert previous["lead_time_hours"] == {"value": 200.0, "band": "medium"}
    assert [(d["day"][5:], d["deployed"]) for d in report["deployments_per_day"]][:2] == [
        ("11-29", 2),
        ("11-30", 1),
    ]
    stages = {row["stage"]: row for row in report["stages"]}
    # coding: 0.5, 1 and 1 h (pr6); deploy: 1, 1, 2 (pr6) and 4 h.
    assert stages["coding"] == {
        "stage": "coding", "pull_requests": 3, "p50_hours": 1.0, "p95_hours": 1.0,
    }  # fmt: skip
    assert stages["deploy"] == {
        "stage": "deploy", "pull_requests": 4, "p50_hours": 1.0, "p95_hours": 4.0,
    }  # fmt: skip
    # openai's $5.50 change (pr6) is good; in all $14.50 for 4 changes, 3 of them good.
    assert report["cost"] == {
        "changes": 4,
        "good_changes": 3,
        "cost_usd": 14.5,
        "cost_per_change_usd": 3.625,
        "cost_per_good_change_usd": round(14.5 / 3, 4),
    }
    assert report["providers"][1] == {
        "provider": "openai",
        "deployments": 1,
        "change_failure_rate": 0.0,
        "changes": 1,
        "good_changes": 1,
        "cost_usd": 5.5,
        "cost_per_change_usd": 5.5,
        "cost_per_good_change_usd": 5.5,
    }


def test_the_cost_of_a_change_and_of_a_good_one_by_provider(scenario):
    report = delivery.delivery(7, now=NOW)
    # pr1, pr2 and pr3 ($3 each) were deployed; pr3's deployment (d4) was rolled back.
    # Of d1, d2 and d4, the deployments that shipped anthropic's changes, d4 failed.
    assert report["providers"] == [
        {
            "provider": "anthropic",
            "deployments": 3,
            "change_failure_rate": round(1 / 3, 4),
            "changes": 3,
            "good_changes": 2,
            "cost_usd": 9.0,
            "cost_per_change_usd": 3.0,
            "cost_per_good_change_usd": 4.5,
        }
    ]
    assert report["cost"] == {
        "changes": 3,
        "good_changes": 2,
        "cost_usd": 9.0,
        "cost_per_change_usd": 3.0,
        "cost_per_good_change_usd": 4.5,
    }


@pytest.fixture
def waits():
    """Two issues completed in the window and what they waited for."""
    long = Issue.objects.create(
        **WHERE, external_id="10", issue_type="feature", provider="anthropic",
        status="succeeded", started_at=NOW - 3 * D, completed_at=NOW - 2 * D,
    )  # fmt: skip
    # An approval of 3 h, a review of 4 h (ready to approved), an escalation answered
    # after 2 h and one never answered, raised 2 h before the end: 11 h of 24.
    asked = NOW - 3 * D + 2 * H
    Approval.objects.create(issue=long, approval_type="merge", status="approved",
                            requested_at=asked, decided_at=asked + 3 * H)  # fmt: skip
    Approval.objects.create(issue=long, approval_type="merge", requested_at=NOW - 3 * D + 6 * H)
    PullRequest.objects.create(
        issue=long, **WHERE, number=70, status="merged", created_at=NOW - 3 * D + 6 * H,
        ready_at=NOW - 3 * D + 8 * H, approved_at=NOW - 3 * D + 12 * H,
        merged_at=NOW - 3 * D + 13 * H,
    )  # fmt: skip
    raised = NOW - 3 * D + 14 * H
    Escalation.objects.create(issue=long, escalation_type="blocked", component="c", reason="r",
                              created_at=raised, resolved_at=raised + 2 * H)  # fmt: skip
    Escalation.objects.create(issue=long, escalation_type="blocked", component="c", reason="r",
                              created_at=NOW - 2 * D - 2 * H)  # fmt: skip
    short = Issue.objects.create(
        **WHERE, external_id="11", issue_type="bug", provider="openai", status="failed",
        started_at=NOW - D, completed_at=NOW - D + 2 * H,
    )  # fmt: skip
    # A 5 h approval, asked before the work started: the wait is the whole 2 h cycle.
    Approval.objects.create(issue=short, approval_type="deployment", status="rejected",
                            requested_at=NOW - D - 3 * H, decided_at=NOW - D + 2 * H)  # fmt: skip
    # Not completed in the window: left out.
    Issue.objects.create(
        **WHERE, external_id="12", issue_type="bug", provider="openai", status="succeeded",
        started_at=NOW - 20 * D, completed_at=NOW - 19 * D,
    )  # fmt: skip


def test_time_waiting_for_a_person_against_time_working(waits, django_assert_num_queries):
    with django_assert_num_queries(1):
        waiting = delivery._waiting(NOW - 7 * D, NOW)
    assert waiting == {
        "issues": 2,
        "cycle_hours": 26.0,
        "waiting_hours": 13.0,
        "working_hours": 13.0,
        "waiting_share": 0.5,
        "waiting_for": {"approvals": 8.0, "reviews": 4.0, "escalations": 4.0},
        "providers": [
            {
                "provider": "anthropic",
                "issues": 1,
                "cycle_hours": 24.0,
                "waiting_hours": 11.0,
                "working_hours": 13.0,
                "waiting_share": round(11 / 24, 4),
                "waiting_for": {"approvals": 3.0, "reviews": 4.0, "escalations": 4.0},
            },
            {
                "provider": "openai",
                "issues": 1,
                "cycle_hours": 2.0,
                "waiting_hours": 2.0,
                "working_hours": 0.0,
                "waiting_share": 1.0,
                "waiting_for": {"approvals": 5.0, "reviews": 0.0, "escalations": 0.0},
            },
        ],
    }


def test_the_stages_of_the_pull_requests_merged_in_the_window(scenario):
    stages = {row["stage"]: row for row in delivery.delivery(7, now=NOW)["stages"]}
    # coding: 1 h (pr1) and 0.5 h (pr3); pickup, review, merge: pr1 only (2 h, 2 h, 1 h);
    # deploy: 4 h (pr1), 1 h (pr2), 1 h (pr3).
    assert stages == {
        "coding": {"stage": "coding", "pull_requests": 2, "p50_hours": 0.5, "p95_hours": 1.0},
        "pickup": {"stage": "pickup", "pull_requests": 1, "p50_hours": 2.0, "p95_hours": 2.0},
        "review": {"stage": "review", "pull_requests": 1, "p50_hours": 2.0, "p95_hours": 2.0},
        "merge": {"stage": "merge", "pull_requests": 1, "p50_hours": 1.0, "p95_hours": 1.0},
        "deploy": {"stage": "deploy", "pull_requests": 3, "p50_hours": 1.0, "p95_hours": 4.0},
    }


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("deployment_frequency", 1.0, "elite"),
        ("deployment_frequency", 0.99, "high"),
        ("deployment_frequency", 1 / 30, "medium"),
        ("deployment_frequency", 0.03, "low"),
        ("lead_time_hours", 23.9, "elite"),
        ("lead_time_hours", 24.0, "high"),
        ("lead_time_hours", 720.0, "low"),
        ("change_failure_rate", 0.05, "elite"),
        ("change_failure_rate", 0.15, "medium"),
        ("change_failure_rate", 0.151, "low"),
        ("recovery_time_hours", 0.99, "elite"),
        ("recovery_time_hours", 167.0, "medium"),
        ("recovery_time_hours", 168.0, "low"),
        ("lead_time_hours", None, None),
    ],
)
def test_bands_at_their_edges(key, value, expected):
    assert delivery.band(key, value) == expected


def test_the_api_serves_the_report_to_whom_sees_its_families(scenario):
    pm = client_of(PRODUCT_MANAGER, "pm")
    with mock.patch.object(timezone, "now", return_value=NOW):
        answer = pm.get("/api/v1/delivery", {"days": 7})
    assert answer.status_code == 200
    body = answer.json()
    assert body["keys"]["change_failure_rate"] == {"value": 0.6, "band": "low"}
    assert body["bands"]["lead_time_hours"] == {
        "elite": 24.0,
        "high": 168.0,
        "medium": 720.0,
        "direction": "below",
    }
    assert body == delivery.delivery(7, now=NOW)
    bad = pm.get("/api/v1/delivery", {"days": 8})
    assert (bad.status_code, bad.json()) == (400, {"days": ["Must be one of 7, 30, 90."]})
    bad = pm.get("/api/v1/delivery", {"provider": "openai"})
    assert (bad.status_code, bad.json()) == (400, {"provider": ["Unknown parameter; use days."]})
    assert client_of(WORKER, "w").get("/api/v1/delivery").status_code == 403


def test_the_page_shows_what_the_api_serves(scenario):
    seed_roles()
    pm = staff_client("pm-page", PRODUCT_MANAGER)
    with mock.patch.object(timezone, "now", return_value=NOW):
        page = pm.get("/reports/delivery/", {"days": "7"})
    assert page.status_code == 200
    assert page.context["report"] == delivery.delivery(7, now=NOW)
    body = page.content.decode()
    assert body.count('class="tamma-chart"') == 3
    assert (
        '<div class="tamma-kpi" id="kpi-change-failure-rate"><div>Change failure rate</div>'
        '<div class="value">60.0%</div><div class="tamma-band low">low</div>'
        '<div class="previous">before: 0.0% (elite)</div>'
    ) in body
    assert '<div class="value">10 <small>h (median)</small></div>' in body
    assert "<td>under 24 h</td><td>under 168 h</td><td>under 720 h</td>" in body
    assert (
        "<td>once a day or more</td><td>once a week or more</td><td>once a month or more</td>"
    ) in body
    assert "<td>anthropic</td><td>3</td><td>33.3%</td><td>3</td><td>2</td><td>9.0</td>" in body
    bad = pm.get("/reports/delivery/", {"days": "8"})
    assert (bad.status_code, bad.context["error"]["field"]) == (400, "days")
    assert "Must be one of 7, 30, 90." in bad.content.decode()
    index = pm.get("/admin/")
    assert 'href="/reports/delivery/"' in index.content.decode()
    # The families of the page, or no page.
    assert staff_client("blind", None).get("/reports/delivery/").status_code == 403
    assert Client().get("/reports/delivery/").status_code == 302  # to the admin login
