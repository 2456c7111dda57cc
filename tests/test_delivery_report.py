"""The delivery report on a fixed scenario whose four keys, bands and stages were worked
out by hand (the docstring of each figure says how)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tamma_metrics.models import Deployment, Incident, Issue, PullRequest
from tamma_metrics.reports import delivery
from tamma_metrics.roles import PRODUCT_MANAGER, WORKER
from tests.utils import client_of

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
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
    issue = Issue.objects.create(
        **WHERE, external_id="1", issue_type="feature", provider="anthropic", status="succeeded"
    )
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


def test_the_four_keys_and_their_bands_for_the_window_and_the_one_before(
    scenario, django_assert_num_queries
):
    with django_assert_num_queries(11):
        report = delivery.delivery(7, now=NOW)
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

    previous = report["previous_keys"]
    assert previous["deployment_frequency"] == {"value": round(1 / 7, 4), "band": "high"}
    assert previous["change_failure_rate"] == {"value": 0.0, "band": "elite"}
    assert previous["lead_time_hours"] == {"value": 200.0, "band": "medium"}
    assert previous["recovery_time_hours"] == {"value": None, "band": None}


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
    bad = pm.get("/api/v1/delivery", {"days": 8})
    assert (bad.status_code, bad.json()) == (400, {"days": ["Must be one of 7, 30, 90."]})
    assert client_of(WORKER, "w").get("/api/v1/delivery").status_code == 403
