"""Deployments and incidents through the state API: rows by natural key, each outcome
counted once, incidents attributed to the deployment that caused them, and the counters
equal to the rows. (Issue #17, first step: the rows and their counters.)"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tamma_metrics.models import Deployment, Escalation, Incident, Issue, PullRequest
from tamma_metrics.roles import ORCHESTRATOR, PRODUCT_MANAGER, WORKER
from tests.utils import client_of, delta

pytestmark = pytest.mark.django_db(transaction=True)

T0 = timezone.now().replace(microsecond=0) - timedelta(days=1)
WHERE = {"platform": "github", "repository": "acme/shop"}
DEPLOYS = "tamma_deployments_total"
RECOVERY = "tamma_failed_deployment_recovery_seconds"


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def deployment(external_id: str, status: str, minutes: float, **fields) -> dict:
    return {
        **WHERE,
        "external_id": external_id,
        "environment": "production",
        "status": status,
        "started_at": at(0),
        "observed_at": at(minutes),
        **fields,
    }


def incident(external_id: str, status: str, minutes: float, **fields) -> dict:
    return {
        **WHERE,
        "external_id": external_id,
        "severity": "high",
        "status": status,
        "observed_at": at(minutes),
        **fields,
    }


@pytest.fixture
def tamma() -> Client:
    return client_of(ORCHESTRATOR, "tamma")


def post(client: Client, path: str, *items: dict):
    body = json.dumps(items[0] if len(items) == 1 else {"items": list(items)})
    return client.post(f"/api/v1/{path}", body, content_type="application/json")


def answers(response) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("index", "key")}
        for r in response.json()["results"]
    ]


@pytest.fixture
def shipped(tamma) -> list[int]:
    """Two merged pull requests of one issue, ready to be deployed."""
    issue = {
        **WHERE,
        "external_id": "42",
        "issue_type": "feature",
        "provider": "anthropic",
        "status": "succeeded",
        "created_at": at(-120),
        "started_at": at(-110),
        "observed_at": at(-10),
    }
    assert post(tamma, "issues", issue).status_code == 201
    prs = [
        {
            **WHERE,
            "number": number,
            "issue_external_id": "42",
            "status": "merged",
            "created_at": at(-100),
            "merged_at": at(-20),
            "observed_at": at(-20),
        }
        for number in (7, 8)
    ]
    assert post(tamma, "pull-requests", *prs).status_code == 200
    return [7, 8]


def test_a_deployment_succeeds_once_with_what_it_shipped(tamma, shipped, metrics):
    before = metrics()
    started = post(tamma, "deployments", deployment("d-1", "in_progress", 1, pull_requests=[7]))
    assert started.status_code == 201
    done = deployment("d-1", "succeeded", 9, pull_requests=shipped, commit_sha="abc123")
    assert answers(post(tamma, "deployments", done)) == [{"status": "updated"}]
    assert answers(post(tamma, "deployments", done)) == [{"status": "unchanged"}]
    # Numbers left out stay linked: what a deployment shipped only grows.
    assert answers(post(tamma, "deployments", {**done, "pull_requests": [8]})) == [
        {"status": "unchanged"}
    ]

    row = Deployment.objects.get()
    assert (row.status, row.commit_sha, row.environment) == ("succeeded", "abc123", "production")
    assert row.finished_at == T0 + timedelta(minutes=9)  # from the observation, not the clock
    assert sorted(row.pull_requests.values_list("number", flat=True)) == shipped
    change = delta(metrics(), before)
    labels = {"platform": "github", "environment": "production"}
    assert change.value(DEPLOYS, **labels, outcome="success") == 1
    assert change.total(DEPLOYS) == 1


def test_a_rollback_counts_once_more_and_is_final(tamma, metrics):
    before = metrics()
    post(tamma, "deployments", deployment("d-1", "succeeded", 5))
    rolled = post(tamma, "deployments", deployment("d-1", "rolled_back", 30))
    assert answers(rolled) == [{"status": "updated"}]
    back = post(tamma, "deployments", deployment("d-1", "succeeded", 40))
    assert back.status_code == 409
    assert answers(back)[0]["errors"] == {"status": ["It is rolled_back, which is final."]}
    # Deployed, then rolled back: a success (it reached production) and a rollback.
    post(tamma, "deployments", deployment("d-2", "rolled_back", 50))
    post(tamma, "deployments", deployment("d-3", "failed", 50))

    change = delta(metrics(), before)
    for outcome, rows, statuses in (
        ("success", 2, ("succeeded", "rolled_back")),
        ("rolled_back", 2, ("rolled_back",)),
        ("failure", 1, ("failed",)),
    ):
        assert Deployment.objects.filter(status__in=statuses).count() == rows
        assert change.total(DEPLOYS, outcome=outcome) == rows, outcome


def test_a_finished_deployment_keeps_its_environment(tamma):
    post(tamma, "deployments", deployment("d-1", "succeeded", 5))
    moved = post(tamma, "deployments", deployment("d-1", "succeeded", 6, environment="staging"))
    assert moved.status_code == 409
    # Its tier, which made it production, is the environment's name's, so it is counted too.
    assert answers(moved)[0]["errors"] == {
        "environment": ["Already counted as production; it no longer changes."],
        "tier": ["Already counted as production; it no longer changes."],
    }


def test_a_deployment_naming_a_missing_pull_request_is_not_found(tamma, shipped):
    missing = post(tamma, "deployments", deployment("d-1", "succeeded", 5, pull_requests=[7, 99]))
    assert missing.status_code == 404
    assert answers(missing) == [
        {
            "status": "not_found",
            "errors": {
                "pull_requests": [
                    "No pull request 99 in github acme/shop: send it to "
                    "POST /api/v1/pull-requests first, then this item again."
                ]
            },
        }
    ]
    assert not Deployment.objects.exists()


def test_an_incident_is_attributed_to_the_last_production_deployment_before_it(tamma, metrics):
    post(
        tamma,
        "deployments",
        deployment("d-old", "succeeded", 5),
        deployment("d-cause", "succeeded", 20),
        deployment("d-staging", "succeeded", 25, environment="staging"),
        deployment("d-failed", "failed", 26),
        deployment("d-later", "succeeded", 90),
    )
    before = metrics()
    opened = post(tamma, "incidents", incident("inc-1", "open", 31, opened_at=at(30)))
    assert opened.status_code == 201
    row = Incident.objects.get()
    assert (row.deployment.external_id, row.attributed) == ("d-cause", True)

    resolved = incident("inc-1", "resolved", 75, opened_at=at(30), resolved_at=at(75))
    assert answers(post(tamma, "incidents", resolved)) == [{"status": "updated"}]
    assert answers(post(tamma, "incidents", resolved)) == [{"status": "unchanged"}]
    reopened = post(tamma, "incidents", incident("inc-1", "open", 80))
    assert reopened.status_code == 409

    change = delta(metrics(), before)
    assert change.value("tamma_incidents_total", severity="high") == 1
    labels = {"platform": "github", "severity": "high"}
    assert change.value(f"{RECOVERY}_count", **labels) == 1
    assert change.value(f"{RECOVERY}_sum", **labels) == pytest.approx(45 * 60, abs=1e-6)
    assert change.value(f"{RECOVERY}_bucket", **labels, le="3600.0") == 1
    assert change.value(f"{RECOVERY}_bucket", **labels, le="1800.0") == 0


def test_an_incident_may_name_its_deployment(tamma):
    post(tamma, "deployments", deployment("d-1", "succeeded", 5))
    named = incident("inc-1", "open", 40, deployment_external_id="d-1")
    assert post(tamma, "incidents", named).status_code == 201
    row = Incident.objects.get()
    assert (row.deployment.external_id, row.attributed) == ("d-1", False)

    missing = post(tamma, "incidents", incident("inc-2", "open", 41, deployment_external_id="x"))
    assert missing.status_code == 404
    assert set(answers(missing)[0]["errors"]) == {"deployment_external_id"}
    # Before any deployment: nothing to attribute it to.
    Deployment.objects.all().delete()
    alone = post(tamma, "incidents", incident("inc-3", "open", 42))
    assert alone.status_code == 201
    row = Incident.objects.get(external_id="inc-3")
    assert (row.deployment, row.attributed) == (None, False)


def test_an_incident_keeps_the_severity_it_was_counted_with(tamma):
    post(tamma, "incidents", incident("inc-1", "open", 5))
    changed = post(tamma, "incidents", incident("inc-1", "open", 6, severity="low"))
    assert changed.status_code == 409
    assert set(answers(changed)[0]["errors"]) == {"severity"}


@pytest.mark.parametrize(
    ("path", "item", "errors"),
    [
        (
            "deployments",
            deployment("d-1", "shipped", 5),
            {"status": ['"shipped" is not a valid choice.']},
        ),
        (
            "deployments",
            deployment("d-1", "succeeded", 5, finished_at=at(-5)),
            {"finished_at": ["Must not be before started_at."]},
        ),
        (
            "deployments",
            deployment("d-1", "succeeded", 5, pull_requests=["seven"]),
            {"pull_requests": {"0": ["A valid integer is required."]}},
        ),
        (
            "incidents",
            incident("inc-1", "open", 5, opened_at=at(10), resolved_at=at(9)),
            {"resolved_at": ["Must not be before opened_at."]},
        ),
        (
            "incidents",
            {k: v for k, v in incident("inc-1", "open", 5).items() if k != "severity"},
            {"severity": ["This field is required."]},
        ),
    ],
)
def test_bad_items_are_rejected_with_their_field(tamma, path, item, errors):
    response = post(tamma, path, item)
    assert response.status_code == 400
    assert answers(response) == [{"status": "rejected", "errors": errors}]
    assert not Deployment.objects.exists() and not Incident.objects.exists()


def test_environments_go_through_the_label_policy(tamma, metrics):
    before = metrics()
    post(tamma, "deployments", deployment("d-1", "succeeded", 5, environment="Preview 7"))
    row = Deployment.objects.get()
    change = delta(metrics(), before)
    assert (
        change.value(DEPLOYS, platform="github", environment=row.environment, outcome="success")
        == 1
    )
    assert row.environment == "Preview_7"  # made label-safe, case kept


def test_only_the_orchestrator_writes_deployments(tamma):
    worker = client_of(WORKER, "worker")
    assert post(worker, "deployments", deployment("d-1", "succeeded", 5)).status_code == 403
    assert post(worker, "incidents", incident("i-1", "open", 5)).status_code == 403
    assert not Deployment.objects.exists()


def test_deleting_a_pull_request_keeps_the_deployment(tamma, shipped):
    post(tamma, "deployments", deployment("d-1", "succeeded", 5, pull_requests=shipped))
    PullRequest.objects.filter(number=7).delete()
    assert list(Deployment.objects.get().pull_requests.values_list("number", flat=True)) == [8]


def test_the_admin_lists_and_shows_deployments_and_incidents(tamma, client):
    post(tamma, "deployments", deployment("d-1", "succeeded", 5))
    post(tamma, "incidents", incident("inc-1", "open", 40))
    for model, row in (
        ("deployment", Deployment.objects.get()),
        ("incident", Incident.objects.get()),
    ):
        listed = client.get(f"/admin/tamma_metrics/{model}/")
        assert listed.status_code == 200
        assert str(row).encode() in listed.content
        assert client.get(f"/admin/tamma_metrics/{model}/{row.pk}/change/").status_code == 200


# -- the pull-request timeline ----------------------------------------------------------

STAGE = "tamma_pr_stage_duration_seconds"
LEAD = "tamma_change_lead_time_seconds"


def timeline_pr(number: int, **fields) -> dict:
    """A pull request of issue 42 with its whole timeline, merged at minute -20."""
    return {
        **WHERE,
        "number": number,
        "issue_external_id": "42",
        "status": "merged",
        "first_commit_at": at(-200),
        "created_at": at(-150),
        "ready_at": at(-120),
        "first_review_at": at(-90),
        "approved_at": at(-30),
        "merged_at": at(-20),
        "review_rounds": 2,
        "changes_requested": 1,
        "additions": 120,
        "deletions": 30,
        "files_changed": 4,
        "observed_at": at(-20),
        **fields,
    }


def test_a_merge_counts_each_stage_of_the_timeline_once(tamma, shipped, metrics):
    before = metrics()
    assert post(tamma, "pull-requests", timeline_pr(9)).status_code == 201
    assert answers(post(tamma, "pull-requests", timeline_pr(9))) == [{"status": "unchanged"}]
    row = PullRequest.objects.get(number=9)
    assert (row.review_rounds, row.changes_requested, row.additions, row.is_revert) == (
        2,
        1,
        120,
        False,
    )
    change = delta(metrics(), before)
    for stage, minutes in (("coding", 80), ("pickup", 30), ("review", 60), ("merge", 10)):
        labels = {"platform": "github", "stage": stage}
        assert change.value(f"{STAGE}_count", **labels) == 1, stage
        assert change.value(f"{STAGE}_sum", **labels) == pytest.approx(minutes * 60), stage
    assert change.total(f"{STAGE}_count", stage="deploy") == 0
    # What the stages were counted from no longer changes: an earlier approval is refused;
    # a later one is no news (the first approval is the earliest reported).
    moved = post(tamma, "pull-requests", timeline_pr(9, approved_at=at(-35), observed_at=at(-1)))
    assert moved.status_code == 409
    assert set(answers(moved)[0]["errors"]) == {"approved_at"}
    later = post(tamma, "pull-requests", timeline_pr(9, approved_at=at(-25), observed_at=at(-1)))
    assert answers(later) == [{"status": "unchanged"}]
    assert PullRequest.objects.get(number=9).approved_at == datetime.fromisoformat(at(-30))


def test_without_approval_or_draft_the_stages_use_what_is_known(tamma, shipped, metrics):
    before = metrics()
    plain = timeline_pr(9, ready_at=None, approved_at=None)
    del plain["ready_at"], plain["approved_at"]
    post(tamma, "pull-requests", plain)
    change = delta(metrics(), before)
    # Ready when opened (-150); reviewed from -90 to the merge at -20; no merge stage.
    for stage, minutes in (("coding", 50), ("pickup", 60), ("review", 70)):
        assert change.value(f"{STAGE}_sum", platform="github", stage=stage) == pytest.approx(
            minutes * 60
        ), stage
    assert change.total(f"{STAGE}_count", stage="merge") == 0


def test_a_production_deployment_counts_each_change_lead_time_once(tamma, shipped, metrics):
    post(tamma, "pull-requests", timeline_pr(9))
    before = metrics()
    staging = deployment("d-stage", "succeeded", 5, environment="staging", pull_requests=[9])
    post(tamma, "deployments", staging)
    assert PullRequest.objects.get(number=9).deployed_at is None  # not production
    started = deployment("d-1", "in_progress", 6, pull_requests=[9, 7])
    post(tamma, "deployments", started)
    assert PullRequest.objects.get(number=9).deployed_at is None  # not finished
    post(tamma, "deployments", deployment("d-1", "succeeded", 40, pull_requests=[9, 7]))
    # A later deployment shipping the same change again counts nothing more.
    post(tamma, "deployments", deployment("d-2", "succeeded", 60, pull_requests=[9, 8]))

    deployed = dict(PullRequest.objects.values_list("number", "deployed_at"))
    assert deployed == {
        7: T0 + timedelta(minutes=40),
        8: T0 + timedelta(minutes=60),
        9: T0 + timedelta(minutes=40),
    }
    change = delta(metrics(), before)
    assert change.value(f"{LEAD}_count", platform="github") == 3
    # From the first commit (9: minute -200) or the opening (7, 8: minute -100).
    assert change.value(f"{LEAD}_sum", platform="github") == pytest.approx((240 + 140 + 160) * 60)
    assert change.value(f"{LEAD}_bucket", platform="github", le="3600.0") == 0
    assert change.value(f"{LEAD}_bucket", platform="github", le="86400.0") == 3
    # The deploy stage: from each merge (minute -20) to its production deployment.
    deploy = {"platform": "github", "stage": "deploy"}
    assert change.value(f"{STAGE}_count", **deploy) == 3
    assert change.value(f"{STAGE}_sum", **deploy) == pytest.approx((60 + 60 + 80) * 60)


def test_bad_timeline_fields_are_rejected(tamma, shipped):
    backwards = post(tamma, "pull-requests", timeline_pr(9, approved_at=at(-10)))
    assert backwards.status_code == 400
    assert answers(backwards)[0]["errors"] == {"merged_at": ["Must not be before approved_at."]}
    negative = post(tamma, "pull-requests", timeline_pr(9, additions=-1))
    assert answers(negative)[0]["errors"] == {
        "additions": ["Ensure this value is greater than or equal to 0."]
    }
    assert not PullRequest.objects.filter(number=9).exists()


def test_an_issues_ai_cost_follows_the_newest_observation_even_after_its_end(tamma, shipped):
    issue = {**WHERE, "external_id": "42", "issue_type": "feature", "provider": "anthropic"}
    done = {**issue, "status": "succeeded", "cost_usd": 1.25, "observed_at": at(-5)}
    assert answers(post(tamma, "issues", done))[0]["status"] == "updated"
    # The last requests' bill arrives after the end: the cost still changes, nothing else.
    later = {**done, "cost_usd": "2.000125", "observed_at": at(-1)}
    assert answers(post(tamma, "issues", later))[0]["status"] == "updated"
    older = {**done, "cost_usd": 9, "observed_at": at(-3)}
    assert answers(post(tamma, "issues", older))[0]["status"] == "stale"
    row = Issue.objects.get(external_id="42")
    assert (str(row.cost_usd), row.status) == ("2.000125", "succeeded")
    for bad, message in ((-1, "greater than or equal to 0"), ("lots", "A valid number")):
        refused = post(tamma, "issues", {**later, "cost_usd": bad, "observed_at": at(0)})
        assert refused.status_code == 400
        assert message in answers(refused)[0]["errors"]["cost_usd"][0]


def test_an_escalation_is_answered_later(tamma):
    raised = {
        "external_id": "esc-1",
        "escalation_type": "blocked",
        "severity": "high",
        "component": "planner",
        "reason": "needs_decision",
        "created_at": at(0),
        "observed_at": at(0),
    }
    assert post(tamma, "escalations", raised).status_code == 201
    answered = {**raised, "resolved_at": at(30), "observed_at": at(31)}
    assert answers(post(tamma, "escalations", answered))[0]["status"] == "updated"
    assert Escalation.objects.get().resolved_at == T0 + timedelta(minutes=30)
    backwards = {**raised, "resolved_at": at(-1), "observed_at": at(32)}
    assert answers(post(tamma, "escalations", backwards))[0]["errors"] == {
        "resolved_at": ["Must not be before created_at."]
    }


def test_the_delivery_report_and_metrics_agree_after_tamma_reports(tamma, shipped, metrics):
    """Sent through the state API, the report's keys equal /metrics' counters."""
    before = metrics()
    post(
        tamma,
        "deployments",
        deployment("d-1", "succeeded", 10, pull_requests=[7]),
        deployment("d-2", "failed", 12),
        deployment("d-3", "succeeded", 14, pull_requests=[8]),
    )
    post(tamma, "deployments", deployment("d-3", "rolled_back", 16))
    post(
        tamma,
        "incidents",
        incident("i-1", "resolved", 40, opened_at=at(20), resolved_at=at(40)),
        incident("i-2", "resolved", 50, opened_at=at(45), resolved_at=at(50)),
    )
    change = delta(metrics(), before)
    pm = client_of(PRODUCT_MANAGER, "pm")
    keys = pm.get("/api/v1/delivery", {"days": 7}).json()["keys"]
    production = {"environment": "production"}
    assert keys["deployments"] == change.total(DEPLOYS, outcome="success", **production) == 2
    rolled_back = change.total(DEPLOYS, outcome="rolled_back", **production)
    failed = change.total(DEPLOYS, outcome="failure", **production)
    # A rollback is counted on /metrics as a success then a rollback: one deployment.
    assert keys["deployments_finished"] == keys["deployments"] + failed == 3
    assert keys["failed_deployments"] == failed + rolled_back == 2
    lead = change.total("tamma_change_lead_time_seconds_count")
    assert keys["changes_deployed"] == lead == 2
    # First commit unknown: opened at -100 min, deployed at 10 and 14 min: 110 and 114 min.
    assert change.total("tamma_change_lead_time_seconds_sum") == pytest.approx(224 * 60)
    assert keys["lead_time_hours"]["value"] == round(110 / 60, 3)
    assert keys["incidents_resolved"] == change.total(f"{RECOVERY}_count") == 2
    assert change.total(f"{RECOVERY}_sum") == pytest.approx((20 + 5) * 60)
    assert keys["recovery_time_hours"]["value"] == round(5 / 60, 3)


def test_a_revert_and_review_rounds_sent_by_tamma_reach_the_delivery_report(tamma, shipped):
    """is_revert, review_rounds, changes_requested and the size, sent through the state
    API, are figures of the delivery report (the pull requests merged in the window)."""
    revert = timeline_pr(9, is_revert=True)  # 2 rounds, 1 change request, 150 lines, 4 files
    assert post(tamma, "pull-requests", revert).status_code == 201
    pm = client_of(PRODUCT_MANAGER, "pm")
    report = pm.get("/api/v1/delivery", {"days": 7}).json()
    # 7, 8 and 9 merged at minute -20; 9 is a revert.
    keys = report["keys"]
    assert (keys["pull_requests_merged"], keys["reverts"], keys["revert_rate"]) == (
        3,
        1,
        round(1 / 3, 4),
    )
    # Rounds 0, 0 and 2: the 2nd and the 3rd of three. Only 9's size is known.
    assert report["reviews"] == {
        "pull_requests": 3,
        "review_rounds_p50": 0.0,
        "review_rounds_p95": 2.0,
        "changes_requested": 1,
        "changes_requested_share": round(1 / 3, 4),
        "sized": 1,
        "lines_changed_mean": 150.0,
        "files_changed_mean": 4.0,
    }
