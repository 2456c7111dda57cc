"""The delivery report on a fixed scenario whose four keys, bands, stages, reverts, review
rounds, costs and waits were worked out by hand (the comment above each figure says how),
in two time zones whose day boundaries put deployments in different windows and days; and
the same scenario's counters on /metrics against the report's figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from tamma_metrics import pages
from tamma_metrics.models import Approval, Deployment, Escalation, Incident, Issue, PullRequest
from tamma_metrics.reports import delivery
from tamma_metrics.roles import PRODUCT_MANAGER, WORKER, seed_roles
from tamma_metrics.state.shipped import stamp_shipped
from tests.utils import client_of, delta, staff_client

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
    """A deployment and what it shipped; a production one that was deployed stamps its
    pull requests' deployed_at as the state API does (counting their lead times)."""
    row = Deployment.objects.create(
        **WHERE,
        external_id=external_id,
        environment=environment,
        status=status,
        started_at=finished - 10 * timedelta(minutes=1),
        finished_at=finished,
    )
    row.pull_requests.add(*shipped)
    stamp_shipped(row)
    return row


def write_scenario() -> None:
    """The fixed scenario, through the ORM (the receivers count each row's transition)."""
    # $12 of AI work, shared by its four pull requests: $3 each.
    issue = Issue.objects.create(
        **WHERE, external_id="1", issue_type="feature", provider="anthropic", status="succeeded",
        cost_usd=12,
    )  # fmt: skip
    other = Issue.objects.create(
        **WHERE, external_id="2", issue_type="bug", provider="openai", status="in_progress",
        cost_usd="5.5",
    )  # fmt: skip
    # $6 for a change and its revert: $3 each.
    third = Issue.objects.create(
        **WHERE, external_id="3", issue_type="feature", provider="anthropic", status="succeeded",
        cost_usd=6,
    )  # fmt: skip
    # The previous window: one deployment, a change with a 200 h lead time.
    pr0 = pr(issue, 10, first_commit_at=NOW - 10 * D - 200 * H, created_at=NOW - 10 * D - 20 * H,
             merged_at=NOW - 10 * D - H)  # fmt: skip
    deploy("d0", "succeeded", NOW - 10 * D, pr0)
    # This window: lead times 10 h, 30 h (from the opening) and 2 h. pr1 took two review
    # rounds (changes requested, then approved); 45 + 15 lines in 3 files.
    pr1 = pr(issue, 1, first_commit_at=NOW - 6 * D - 10 * H, created_at=NOW - 6 * D - 9 * H,
             first_review_at=NOW - 6 * D - 7 * H, approved_at=NOW - 6 * D - 5 * H,
             merged_at=NOW - 6 * D - 4 * H, review_rounds=2, changes_requested=1,
             additions=45, deletions=15, files_changed=3)  # fmt: skip
    pr2 = pr(issue, 2, created_at=NOW - 5 * D - 30 * H, merged_at=NOW - 5 * D - H)
    pr3 = pr(issue, 3, first_commit_at=NOW - 3 * D - 2 * H, created_at=NOW - 3 * D - 1.5 * H,
             merged_at=NOW - 3 * D - H)  # fmt: skip
    # pr4 was opened as a draft (1 h after its first commit) and was ready 3 h later: its
    # coding stage runs to the ready time (4 h), its pickup from there (1 h, not 4 h). Three
    # review rounds, changes requested twice, approved after 4 h, merged 1 h later; 90 + 30
    # lines in 6 files. Shipped by d5, which caused i1: not a good change. Lead time 12 h.
    pr4 = pr(third, 4, first_commit_at=NOW - 2 * D - 12 * H, created_at=NOW - 2 * D - 11 * H,
             ready_at=NOW - 2 * D - 8 * H, first_review_at=NOW - 2 * D - 7 * H,
             approved_at=NOW - 2 * D - 3 * H, merged_at=NOW - 2 * D - 2 * H, review_rounds=3,
             changes_requested=2, additions=90, deletions=30, files_changed=6)  # fmt: skip
    deploy("d1", "succeeded", NOW - 6 * D, pr1)
    deploy("d2", "succeeded", NOW - 5 * D, pr2)
    deploy("d3", "failed", NOW - 4 * D)
    deploy("d4", "rolled_back", NOW - 3 * D, pr3)
    d5 = deploy("d5", "succeeded", NOW - 2 * D, pr4)
    deploy("s1", "succeeded", NOW - D, environment="staging")  # not production: left out
    # Recoveries of 2 h (caused by d5) and 30 minutes.
    Incident.objects.create(**WHERE, external_id="i1", status="resolved", deployment=d5,
                            opened_at=NOW - 2 * D + H, resolved_at=NOW - 2 * D + 3 * H)  # fmt: skip
    Incident.objects.create(**WHERE, external_id="i2", status="resolved",
                            opened_at=NOW - D, resolved_at=NOW - D + 0.5 * H)  # fmt: skip
    # pr5 reverts pr4 after i1 opened (nothing records which change it undid): coding
    # 0.5 h, pickup 0.5 h, approved at its one review (0 h), merged 0.5 h later, deployed
    # by d7 0.5 h after (lead time 2 h) at 15:00 UTC: midnight of the 4th in Tokyo.
    pr5 = pr(third, 5, first_commit_at=NOW - 2 * D + H, created_at=NOW - 2 * D + 1.5 * H,
             first_review_at=NOW - 2 * D + 2 * H, approved_at=NOW - 2 * D + 2 * H,
             merged_at=NOW - 2 * D + 2.5 * H, review_rounds=1, is_revert=True, additions=30,
             deletions=90, files_changed=6)  # fmt: skip
    deploy("d7", "succeeded", NOW - 2 * D + 3 * H, pr5)
    # At 2026-11-28T20:00Z: the previous window in UTC, this one in Tokyo (05:00 on the
    # 29th there); a lead time of 4 h, coding 1 h, deploy 2 h.
    edge = datetime(2026, 11, 28, 20, tzinfo=UTC)
    pr6 = pr(other, 6, first_commit_at=edge - 4 * H, created_at=edge - 3 * H,
             merged_at=edge - 2 * H)  # fmt: skip
    deploy("d6", "succeeded", edge, pr6)


@pytest.fixture
def scenario():
    write_scenario()


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
    # d1, d2, d4 (rolled back: it was deployed), d5 and d7 in 7 days; d3 failed.
    assert keys["deployment_frequency"] == {"value": round(5 / 7, 4), "band": "high"}
    # Of d1, d2, d3, d4, d5 and d7, d3 failed, d4 was rolled back and d5 caused i1.
    assert keys["change_failure_rate"] == {"value": 0.5, "band": "low"}
    # Median of 2 (pr3), 2 (pr5), 10 (pr1), 12 (pr4) and 30 (pr2) hours: the third.
    assert keys["lead_time_hours"] == {"value": 10.0, "band": "elite"}
    # Nearest-rank median of 0.5 and 2 hours: the first.
    assert keys["recovery_time_hours"] == {"value": 0.5, "band": "elite"}
    assert (keys["deployments"], keys["deployments_finished"], keys["failed_deployments"]) == (
        5,
        6,
        3,
    )
    assert (keys["changes_deployed"], keys["incidents_resolved"]) == (5, 2)
    # pr1 to pr5 merged in the window; pr5 is a revert.
    assert (keys["pull_requests_merged"], keys["reverts"], keys["revert_rate"]) == (5, 1, 0.2)

    # d0 and d6 (20:00 UTC on the 28th); lead times 200 h and 4 h: the lower median.
    previous = report["previous_keys"]
    assert previous["deployment_frequency"] == {"value": round(2 / 7, 4), "band": "high"}
    assert previous["change_failure_rate"] == {"value": 0.0, "band": "elite"}
    assert previous["lead_time_hours"] == {"value": 4.0, "band": "elite"}
    assert previous["recovery_time_hours"] == {"value": None, "band": None}
    assert (previous["changes_deployed"], previous["incidents_resolved"]) == (2, 0)
    # pr0 and pr6 merged before; neither a revert.
    assert (previous["pull_requests_merged"], previous["reverts"], previous["revert_rate"]) == (
        2,
        0,
        0.0,
    )
    # One a day at noon from the 29th; d3 failed, d4 was rolled back, d5 caused i1; d7
    # at 15:00 on the 3rd.
    assert [(d["day"][5:], d["deployed"], d["failed"]) for d in report["deployments_per_day"]] == [
        ("11-29", 1, 0),
        ("11-30", 1, 0),
        ("12-01", 0, 1),
        ("12-02", 1, 1),
        ("12-03", 2, 1),
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
    # d6 (05:00 on the 29th in Tokyo) joins: d6, d1, d2, d4, d5, d7 deployed of seven
    # finished; d3, d4 and d5 failed.
    assert keys["deployment_frequency"] == {"value": round(6 / 7, 4), "band": "high"}
    assert keys["change_failure_rate"] == {"value": round(3 / 7, 4), "band": "low"}
    # Median of 2, 2, 4, 10, 12 and 30 hours: the third.
    assert keys["lead_time_hours"] == {"value": 4.0, "band": "elite"}
    assert keys["recovery_time_hours"] == {"value": 0.5, "band": "elite"}
    # pr6 (merged 03:00 on the 29th in Tokyo) joins pr1 to pr5: one revert in six.
    assert (keys["pull_requests_merged"], keys["reverts"], keys["revert_rate"]) == (
        6,
        1,
        round(1 / 6, 4),
    )
    previous = report["previous_keys"]
    assert previous["deployment_frequency"] == {"value": round(1 / 7, 4), "band": "high"}
    assert previous["lead_time_hours"] == {"value": 200.0, "band": "medium"}
    assert (previous["pull_requests_merged"], previous["reverts"]) == (1, 0)
    # d7 (15:00 UTC on the 3rd) is midnight of the 4th in Tokyo.
    assert [(d["day"][5:], d["deployed"], d["failed"]) for d in report["deployments_per_day"]] == [
        ("11-29", 2, 0),
        ("11-30", 1, 0),
        ("12-01", 0, 1),
        ("12-02", 1, 1),
        ("12-03", 1, 1),
        ("12-04", 1, 0),
        ("12-05", 0, 0),
    ]
    stages = {row["stage"]: row for row in report["stages"]}
    # coding: 0.5 (pr3), 0.5 (pr5), 1 (pr1), 1 (pr6) and 4 h (pr4); deploy: 0.5 (pr5),
    # 1 (pr2), 1 (pr3), 2 (pr4), 2 (pr6) and 4 h (pr1).
    assert stages["coding"] == {
        "stage": "coding", "pull_requests": 5, "p50_hours": 1.0, "p95_hours": 4.0,
    }  # fmt: skip
    assert stages["deploy"] == {
        "stage": "deploy", "pull_requests": 6, "p50_hours": 1.0, "p95_hours": 4.0,
    }  # fmt: skip
    # Review rounds 0 (pr2, pr3, pr6), 1 (pr5), 2 (pr1), 3 (pr4): ranks 3 and 6 of six.
    assert report["reviews"]["review_rounds_p50"] == 0.0
    assert report["reviews"]["review_rounds_p95"] == 3.0
    assert report["reviews"]["changes_requested_share"] == round(2 / 6, 4)
    # openai's $5.50 change (pr6) is good; in all $20.50 for 6 changes, 4 of them good.
    assert report["cost"] == {
        "changes": 6,
        "good_changes": 4,
        "cost_usd": 20.5,
        "cost_per_change_usd": round(20.5 / 6, 4),
        "cost_per_good_change_usd": 5.125,
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
    # pr1, pr2, pr3, pr4 and pr5 ($3 each) were deployed; pr3's deployment (d4) was
    # rolled back and pr4's (d5) caused an incident. The revert pr5 is a change like any
    # other, and good (d7 neither failed nor caused an incident); pr4, the change it
    # undid, is not good because of d5, not because of the revert (nothing links them).
    # Of d1, d2, d4, d5 and d7, the deployments that shipped anthropic's changes, d4 and
    # d5 failed.
    assert report["providers"] == [
        {
            "provider": "anthropic",
            "deployments": 5,
            "change_failure_rate": 0.4,
            "changes": 5,
            "good_changes": 3,
            "cost_usd": 15.0,
            "cost_per_change_usd": 3.0,
            "cost_per_good_change_usd": 5.0,
        }
    ]
    assert report["cost"] == {
        "changes": 5,
        "good_changes": 3,
        "cost_usd": 15.0,
        "cost_per_change_usd": 3.0,
        "cost_per_good_change_usd": 5.0,
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
    # The page says them in words.
    assert pages._in_words(waiting) == {
        "cycle_hours": "26 h",
        "waiting_hours": "13 h",
        "working_hours": "13 h",
        "waiting_for": {"approvals": "8 h", "reviews": "4 h", "escalations": "4 h"},
    }


def test_the_stages_of_the_pull_requests_merged_in_the_window(scenario):
    stages = {row["stage"]: row for row in delivery.delivery(7, now=NOW)["stages"]}
    # coding: 0.5 (pr3), 0.5 (pr5), 1 (pr1) and 4 h (pr4: first commit to ready, the draft
    # included); pr2 has no first commit.
    # pickup: 0.5 (pr5), 1 (pr4: from ready, not from its opening) and 2 h (pr1).
    # review: 0 (pr5), 2 (pr1) and 4 h (pr4); merge: 0.5 (pr5), 1 (pr1) and 1 h (pr4).
    # deploy: 0.5 (pr5), 1 (pr2), 1 (pr3), 2 (pr4) and 4 h (pr1).
    # Nearest-rank: of 3 values the 2nd and 3rd; of 4 the 2nd and 4th; of 5 the 3rd, 5th.
    assert stages == {
        "coding": {"stage": "coding", "pull_requests": 4, "p50_hours": 0.5, "p95_hours": 4.0},
        "pickup": {"stage": "pickup", "pull_requests": 3, "p50_hours": 1.0, "p95_hours": 2.0},
        "review": {"stage": "review", "pull_requests": 3, "p50_hours": 2.0, "p95_hours": 4.0},
        "merge": {"stage": "merge", "pull_requests": 3, "p50_hours": 1.0, "p95_hours": 1.0},
        "deploy": {"stage": "deploy", "pull_requests": 5, "p50_hours": 1.0, "p95_hours": 4.0},
    }


def test_review_rounds_changes_requested_and_size_of_the_merged(scenario):
    reviews = delivery.delivery(7, now=NOW)["reviews"]
    # pr1 to pr5: rounds 2, 0, 0, 3, 1 -> sorted 0, 0, 1, 2, 3; the 3rd and the 5th.
    # Changes requested on pr1 and pr4: 2 of 5. Sizes known for pr1 (60 lines, 3 files),
    # pr4 (120, 6) and pr5 (120, 6): 300 / 3 = 100 lines, 15 / 3 = 5 files.
    assert reviews == {
        "pull_requests": 5,
        "review_rounds_p50": 1.0,
        "review_rounds_p95": 3.0,
        "changes_requested": 2,
        "changes_requested_share": 0.4,
        "sized": 3,
        "lines_changed_mean": 100.0,
        "files_changed_mean": 5.0,
    }


def test_without_pull_requests_the_review_figures_are_empty(django_assert_num_queries):
    with django_assert_num_queries(15):
        report = delivery.delivery(7, now=NOW)
    assert report["reviews"] == {
        "pull_requests": 0,
        "review_rounds_p50": None,
        "review_rounds_p95": None,
        "changes_requested": 0,
        "changes_requested_share": None,
        "sized": 0,
        "lines_changed_mean": None,
        "files_changed_mean": None,
    }
    assert (report["keys"]["pull_requests_merged"], report["keys"]["revert_rate"]) == (0, None)


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
    assert body["keys"]["change_failure_rate"] == {"value": 0.5, "band": "low"}
    assert (body["keys"]["reverts"], body["reviews"]["changes_requested"]) == (1, 2)
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
        '<div class="value">50.0%</div><div class="tamma-band low">low</div>'
        '<div class="previous">before: 0.0% (elite)</div>'
    ) in body
    # Durations in words: the unit by size (hours under two days, days above).
    assert '<div class="value">10 h <small>median</small></div>' in body
    assert '<div class="previous">before: 4 h (elite)</div>' in body
    assert "<td>under 24 h</td><td>under 7 d</td><td>under 30 d</td>" in body
    assert "<td>under 1 h</td><td>under 24 h</td><td>under 7 d</td>" in body
    assert "<td>coding</td><td>4</td><td>30 min</td><td>4 h</td>" in body
    assert '<p id="waiting">Of 0 s of work on the 0 issues completed, 0 s (–) waited' in body
    assert ">hours</text>" in page.context["charts"][1]["svg"]  # the stages' axis
    assert (
        "<td>once a day or more</td><td>once a week or more</td><td>once a month or more</td>"
    ) in body
    assert "<td>anthropic</td><td>5</td><td>40.0%</td><td>5</td><td>3</td><td>15.0</td>" in body
    assert (
        '<p id="reverts">Reverts: 1 of the 5 pull requests merged (20%); before: 0 of 2 (0%).'
    ) in body
    assert (
        "review rounds (reviews by people; bots' reviews are not counted) median 1.0, "
        "p95 3.0; a person requested changes on 2 (40%); mean size 100.0 lines in 5.0 files, "
        "over the 3 whose size is known.</p>"
    ) in body
    bad = pm.get("/reports/delivery/", {"days": "8"})
    assert (bad.status_code, bad.context["error"]["field"]) == (400, "days")
    assert "Must be one of 7, 30, 90." in bad.content.decode()
    index = pm.get("/admin/")
    assert 'href="/reports/delivery/"' in index.content.decode()
    # The families of the page, or no page.
    assert staff_client("blind", None).get("/reports/delivery/").status_code == 403
    assert Client().get("/reports/delivery/").status_code == 302  # to the admin login


# -- the same scenario on /metrics --------------------------------------------------------

DEPLOYS = "tamma_deployments_total"
LEAD = "tamma_change_lead_time_seconds"
STAGE = "tamma_pr_stage_duration_seconds"
RECOVERY = "tamma_failed_deployment_recovery_seconds"


def test_page_api_and_metrics_agree_on_the_scenario(metrics, django_capture_on_commit_callbacks):
    """The counters follow the rows' transitions since the beginning; the report counts
    a window. Over 90 days, which hold the whole scenario, and over this week and the one
    before together, they count the same things."""
    before = metrics()
    with django_capture_on_commit_callbacks(execute=True):
        write_scenario()
    change = delta(metrics(), before)
    seed_roles()
    page_client = staff_client("pm-page", PRODUCT_MANAGER)
    api_client = client_of(PRODUCT_MANAGER, "pm")
    with mock.patch.object(timezone, "now", return_value=NOW):
        page = page_client.get("/reports/delivery/", {"days": "90"})
        report = api_client.get("/api/v1/delivery", {"days": 90}).json()
        week = api_client.get("/api/v1/delivery", {"days": 7}).json()
    assert page.context["report"] == report
    keys, both = report["keys"], (week["keys"], week["previous_keys"])
    assert (
        '<p id="counts">7 deployed of 8 finished, 3 failed, rolled back or caused an incident; '
        "7 changes deployed; 2 incidents resolved.</p>"
    ) in page.content.decode()

    # Deployments: d0, d1, d2, d4 (rolled back after it was deployed), d5, d6 and d7
    # succeeded; d3 failed; d4 was rolled back.
    production = {"platform": "github", "environment": "production"}
    success = change.value(DEPLOYS, **production, outcome="success")
    failure = change.value(DEPLOYS, **production, outcome="failure")
    rolled_back = change.value(DEPLOYS, **production, outcome="rolled_back")
    assert (success, failure, rolled_back) == (7, 1, 1)
    assert keys["deployments"] == sum(k["deployments"] for k in both) == success
    assert keys["deployments_finished"] == sum(k["deployments_finished"] for k in both)
    assert keys["deployments_finished"] == success + failure  # a rollback was a success
    # Different by definition: the report's failures also hold d5, which caused i1 (the
    # counter has no incident outcome).
    assert keys["failed_deployments"] == failure + rolled_back + 1
    # The staging deployment is counted, in its environment; the report leaves it out.
    assert change.value(DEPLOYS, platform="github", environment="staging", outcome="success") == 1

    # Lead times of the seven changes: 200 + 10 + 30 + 2 + 12 + 2 + 4 = 260 h; five under
    # a day, so the median (the 4th of 7) is under a day on /metrics too: elite.
    assert change.value(f"{LEAD}_count", platform="github") == keys["changes_deployed"] == 7
    assert sum(k["changes_deployed"] for k in both) == 7
    assert change.value(f"{LEAD}_sum", platform="github") == pytest.approx(260 * 3600)
    assert change.value(f"{LEAD}_bucket", platform="github", le="86400.0") == 5
    assert keys["lead_time_hours"] == {"value": 10.0, "band": "elite"}

    # Stages, counted at each merge (deploy: at the deployment) of pr0 to pr6:
    # coding 180 (pr0) + 1 + 0.5 + 4 + 0.5 + 1 (pr6) = 187 h over 6 (pr2 has no commit);
    # pickup 2 + 1 + 0.5, review 2 + 4 + 0, merge 1 + 1 + 0.5 over pr1, pr4 and pr5;
    # deploy 1 (pr0) + 4 + 1 + 1 + 2 + 0.5 + 2 (pr6) = 11.5 h over 7.
    stages = {row["stage"]: row["pull_requests"] for row in report["stages"]}
    for stage, count, hours in (
        ("coding", 6, 187.0),
        ("pickup", 3, 3.5),
        ("review", 3, 6.0),
        ("merge", 3, 2.5),
        ("deploy", 7, 11.5),
    ):
        labels = {"platform": "github", "stage": stage}
        assert change.value(f"{STAGE}_count", **labels) == stages[stage] == count, stage
        assert change.value(f"{STAGE}_sum", **labels) == pytest.approx(hours * 3600), stage

    # Incidents: the counter counts openings, the report resolutions (both i1 and i2 are
    # resolved); recoveries of 2 h and 0.5 h.
    assert change.value("tamma_incidents_total", severity="high") == 2
    recovered = {"platform": "github", "severity": "high"}
    assert change.value(f"{RECOVERY}_count", **recovered) == keys["incidents_resolved"] == 2
    assert change.value(f"{RECOVERY}_sum", **recovered) == pytest.approx(2.5 * 3600)
    assert keys["recovery_time_hours"] == {"value": 0.5, "band": "elite"}
