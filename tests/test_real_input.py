"""Figures from input nobody here wrote (issue 24): the platforms' real payloads and their
same-second bursts, what the platforms mean (reviews, approvals, production, incidents),
hostile values with their exact answers, and durations the histograms never reject.

Real payloads: octokit's published examples (``tests/corpus.py``, npm
``@octokit/webhooks-examples``) and GitLab's webhook documentation
(``tests/fixtures/gitlab-docs/``); sources in ``tests/fixtures/README.md``."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.utils import floatToGoString

from tamma_metrics import catalogue
from tamma_metrics.models import (
    Approval,
    Deployment,
    Escalation,
    Incident,
    Issue,
    PullRequest,
    PullRequestReview,
    WebhookDelivery,
)
from tamma_metrics.roles import ORCHESTRATOR, PRODUCT_MANAGER
from tests.corpus import github_examples, gitlab_docs
from tests.test_webhooks import SECRET, TOKEN, sign
from tests.utils import client_of, delta

pytestmark = pytest.mark.django_db(transaction=True)

DELIVERIES = "tamma_metrics_webhook_deliveries_total"
T = timezone.now().replace(microsecond=0) - timedelta(days=2)
WHERE = {"platform": "github", "repository": "acme/shop"}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def minutes(n: float) -> datetime:
    return T + timedelta(minutes=n)


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.TAMMA_METRICS = {"WEBHOOK_SECRETS": {"github": SECRET, "gitlab": TOKEN}}


@pytest.fixture
def tamma() -> Client:
    return client_of(ORCHESTRATOR, "tamma")


def post(client: Client, path: str, body: Any) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(f"/api/v1/{path}", data, content_type="application/json")


def github(event: str, payload: Any, delivery: str | None = None) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Client().post(
        "/api/v1/webhooks/github",
        body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT=event,
        HTTP_X_GITHUB_DELIVERY=delivery or str(uuid.uuid4()),
        HTTP_X_HUB_SIGNATURE_256=sign(body),
    )


def gitlab(payload: Any, delivery: str | None = None) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Client().post(
        "/api/v1/webhooks/gitlab",
        body,
        content_type="application/json",
        HTTP_X_GITLAB_TOKEN=TOKEN,
        HTTP_IDEMPOTENCY_KEY=delivery or str(uuid.uuid4()),
    )


def issue_row(platform: str, repository: str, external_id: str = "1") -> Issue:
    return Issue.objects.create(
        platform=platform,
        repository=repository,
        external_id=external_id,
        issue_type="bug",
        provider="anthropic",
        status="in_progress",
    )


def held_pr(platform: str, repository: str, number: int, created: datetime) -> PullRequest:
    return PullRequest.objects.create(
        issue=issue_row(platform, repository, f"i{number}"),
        platform=platform,
        repository=repository,
        number=number,
        created_at=created,
        observed_at=created,
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- one ordering rule: same-second bursts converge ----------------------------------------


def burst_items(number: int) -> list[dict[str, Any]]:
    """Observations of one pull request, all at the same second, as Tamma or a platform
    sends them in a burst (opened, labeled, ready for review, reviewed, closed): each
    carries its own facts; every one carries the opening time, as real payloads do."""
    common = {**WHERE, "number": number, "issue_external_id": "1", "observed_at": iso(T)}
    created = iso(minutes(-60))
    return [
        {**common, "status": "open", "created_at": created, "first_commit_at": iso(minutes(-90))},
        {
            **common,
            "status": "open",
            "created_at": created,
            "ready_at": iso(minutes(-10)),
            "additions": 10,
            "deletions": 1,
        },  # fmt: skip
        {
            **common,
            "status": "open",
            "created_at": created,
            "first_review_at": iso(minutes(-5)),
            "additions": 12,
            "review_rounds": 1,
        },  # fmt: skip
        {
            **common,
            "status": "closed",
            "created_at": created,
            "closed_at": iso(T),
            "additions": 11,
        },  # fmt: skip
        {**common, "status": "open", "created_at": created, "changes_requested": 1},
    ]


EXPECTED = {
    "status": "closed",
    "created_at": minutes(-60),
    "first_commit_at": minutes(-90),
    "ready_at": minutes(-10),
    "first_review_at": minutes(-5),
    "closed_at": T,
    "additions": 12,  # the largest size seen at that second
    "deletions": 1,
    "review_rounds": 1,
    "changes_requested": 1,
    "observed_at": T,
}


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(order=st.permutations(range(5)), batched=st.booleans())
def test_a_same_second_burst_converges_in_every_order(tamma, metrics, order, batched):
    number = PullRequest.objects.count() + 100  # a pull request of its own per example
    if not Issue.objects.filter(external_id="1").exists():
        post(tamma, "issues", {**WHERE, "external_id": "1", "issue_type": "bug",
             "provider": "anthropic", "status": "in_progress", "observed_at": iso(T)})  # fmt: skip
    items = [burst_items(number)[i] for i in order]
    before = metrics()
    if batched:
        answer = post(tamma, "pull-requests", {"items": items})
        statuses = [result["status"] for result in answer.json()["results"]]
    else:
        statuses = [post(tamma, "pull-requests", item).json()["results"][0]["status"]
                    for item in items]  # fmt: skip
    assert set(statuses) <= {"created", "updated", "unchanged", "stale"}, statuses
    row = PullRequest.objects.get(number=number)
    assert {name: getattr(row, name) for name in EXPECTED} == EXPECTED
    change = delta(metrics(), before)
    assert change.total("tamma_prs_created_total") == 1
    assert change.total("tamma_prs_merged_total") == 0


OCTOKIT_SECOND = "2019-05-15T15:21:18Z"


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_octokits_burst_in_any_order_counts_each_delivery_once(metrics, data):
    """Every octokit pull_request example of one second, in any order (hypothesis), on a
    pull request of its own: the same row, and each delivery counted once by its outcome."""
    burst = [
        example
        for example in github_examples("pull_request")
        if example["pull_request"]["updated_at"] == OCTOKIT_SECOND
    ]
    listed = data.draw(st.permutations(burst), label="order")
    number = PullRequest.objects.count() + 1000
    pr = burst[0]["pull_request"]
    held_pr("github", burst[0]["repository"]["full_name"], number, at(pr["created_at"]))
    before = metrics()
    outcomes: dict[str, int] = {}
    for example in listed:
        payload = copy.deepcopy(example)
        payload["pull_request"]["number"] = number
        outcome = github("pull_request", payload).json()["outcome"]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    row = PullRequest.objects.get(number=number)
    second = at(OCTOKIT_SECOND)
    assert (row.status, row.ready_at, row.closed_at, row.observed_at) == (
        "closed",
        second,
        second,
        second,
    )
    change = delta(metrics(), before)
    assert {
        outcome: change.value(DELIVERIES, platform="github", outcome=outcome)
        for outcome in outcomes
    } == outcomes
    assert sum(outcomes.values()) == len(burst)
    # What is new is written once each: the sizes (whichever came first), the closing and
    # the ready-for-review time; nothing else is applied, whatever the order.
    assert 2 <= outcomes.get("applied", 0) <= 3


def test_octokits_same_second_burst_converges_to_one_row(metrics):
    """octokit's pull_request examples of 2019-05-15T15:21:18Z (closed, converted to a
    draft, ready for review: one pull request, one second), in the package's order and
    reversed, end in the same row."""
    burst = [
        example
        for example in github_examples("pull_request")
        if example["pull_request"]["updated_at"] == "2019-05-15T15:21:18Z"
    ]
    assert {example["action"] for example in burst} == {
        "closed",
        "converted_to_draft",
        "ready_for_review",
    }
    rows = []
    for number, listed in ((2, burst), (3, burst[::-1])):
        pr = burst[0]["pull_request"]
        held_pr("github", burst[0]["repository"]["full_name"], number, at(pr["created_at"]))
        for example in listed:
            payload = copy.deepcopy(example)
            payload["pull_request"]["number"] = number
            answer = github("pull_request", payload)
            assert answer.status_code == 200, answer.content
            assert answer.json()["outcome"] in ("applied", "unchanged", "stale")
        row = PullRequest.objects.get(number=number)
        rows.append((row.status, row.ready_at, row.closed_at, row.additions, row.observed_at))
    second = at("2019-05-15T15:21:18Z")
    assert rows[0] == rows[1] == ("closed", second, second, rows[0][3], second)


def test_a_delivery_that_writes_nothing_is_not_applied(metrics):
    """An older observation is answered stale, the same one again unchanged, each counted
    as such; a contradiction is a conflict (409) whose id is not kept."""
    opened = github_examples("pull_request", "opened")[0]
    created = at(opened["pull_request"]["created_at"])
    held_pr("github", opened["repository"]["full_name"], opened["number"], created)
    closed = next(
        example
        for example in github_examples("pull_request", "closed")
        if not example["pull_request"]["merged"]
    )
    before = metrics()
    assert github("pull_request", closed).json() == {"outcome": "applied", "result": "updated"}
    same = github("pull_request", closed)
    assert (same.status_code, same.json()) == (200, {"outcome": "unchanged", "result": "unchanged"})
    older = github("pull_request", opened)
    assert (older.status_code, older.json()) == (200, {"outcome": "stale", "result": "stale"})
    change = delta(metrics(), before)
    for outcome, count in (("applied", 1), ("unchanged", 1), ("stale", 1)):
        assert change.value(DELIVERIES, platform="github", outcome=outcome) == count, outcome
    # Merged, then a later delivery saying open: a merged pull request stays merged.
    row = PullRequest.objects.get(number=opened["number"])
    row.status, row.merged_at = "merged", row.observed_at
    row.save()
    reopened = copy.deepcopy(opened)
    reopened["pull_request"]["updated_at"] = "2030-01-01T00:00:00Z"
    delivery = str(uuid.uuid4())
    future = github("pull_request", reopened, delivery)
    assert future.status_code == 400  # beyond the allowed skew: refused first
    reopened["pull_request"]["updated_at"] = iso(timezone.now().replace(microsecond=0))
    conflict = github("pull_request", reopened, delivery)
    assert conflict.status_code == 409, conflict.content
    assert conflict.json()["outcome"] == "conflict" and "status" in conflict.json()["errors"]
    assert not WebhookDelivery.objects.filter(delivery_id=delivery).exists()


# -- what the platforms mean ---------------------------------------------------------------


def review(example: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(example)
    for path, value in changes.items():
        target = payload
        *parents, last = path.split("__")
        for part in parents:
            target = target[part]
        target[last] = value
    return payload


REVIEWER = {"login": "octo-reviewer", "id": 583231, "type": "User"}


@pytest.fixture
def octokit_review() -> dict[str, Any]:
    """octokit's submitted review, by someone other than the pull request's author (in
    the example Codertocat reviews their own pull request: see the test below)."""
    example = github_examples("pull_request_review", "submitted")[0]
    pr = example["pull_request"]
    held_pr("github", example["repository"]["full_name"], pr["number"], at(pr["created_at"]))
    return review(example, review__user=REVIEWER)


def test_octokits_review_is_by_the_author_so_it_counts_nothing():
    example = github_examples("pull_request_review", "submitted")[0]
    pr = example["pull_request"]
    held_pr("github", example["repository"]["full_name"], pr["number"], at(pr["created_at"]))
    assert example["review"]["user"]["id"] == pr["user"]["id"]
    answer = github("pull_request_review", example)
    assert (answer.status_code, answer.json()["detail"]) == (
        202,
        "Ignored: a review by the pull request's author.",
    )
    assert PullRequest.objects.get().first_review_at is None


def test_reviews_count_by_the_platforms_id_never_the_authors(octokit_review, metrics):
    number = octokit_review["pull_request"]["number"]
    submitted = octokit_review["review"]["submitted_at"]
    # octokit's example is a "commented" review by someone else: it ends the pickup, no round.
    assert octokit_review["review"]["state"] == "commented"
    assert octokit_review["review"]["user"]["id"] != octokit_review["pull_request"]["user"]["id"]
    first = github("pull_request_review", octokit_review)
    assert first.json() == {"outcome": "applied", "result": "updated"}
    row = PullRequest.objects.get(number=number)
    assert (row.first_review_at, row.review_rounds) == (at(submitted), 0)
    # The same review under a new delivery id: unchanged.
    again = github("pull_request_review", octokit_review)
    assert again.json() == {"outcome": "unchanged", "result": "unchanged"}
    # Verdicts count as rounds, each review once by its id.
    approved = review(octokit_review, review__state="approved", review__id=9001)
    changes = review(octokit_review, review__state="changes_requested", review__id=9002)
    for payload in (changes, approved, changes):
        assert github("pull_request_review", payload).status_code == 200
    row.refresh_from_db()
    assert (row.review_rounds, row.changes_requested, row.approved_at) == (2, 1, at(submitted))
    # The author's own review (a reply in their thread) and a dismissed one: 202, nothing.
    author = review(
        octokit_review,
        review__user=octokit_review["pull_request"]["user"],
        review__state="approved",
        review__id=9003,
    )
    by_author = github("pull_request_review", author)
    assert (by_author.status_code, by_author.json()["detail"]) == (
        202,
        "Ignored: a review by the pull request's author.",
    )
    dismissed = github("pull_request_review", review(octokit_review, review__state="dismissed"))
    assert dismissed.status_code == 202
    assert PullRequestReview.objects.filter(pull_request=row).count() == 3
    row.refresh_from_db()
    assert (row.review_rounds, row.changes_requested) == (2, 1)


def test_a_review_of_a_merged_or_unknown_pull_request_answers_202(octokit_review):
    PullRequest.objects.update(status="merged", merged_at=timezone.now())
    merged = github("pull_request_review", octokit_review)
    assert merged.status_code == 202
    assert merged.json() == {
        "outcome": "ignored",
        "detail": "Ignored: a review of a merged pull request (its stages were counted at "
        "the merge).",
    }
    other = review(octokit_review, pull_request__number=999)
    assert github("pull_request_review", other).status_code == 202


def test_a_review_before_the_pull_request_opened_is_refused(octokit_review):
    early = review(octokit_review, review__submitted_at="2019-05-15T15:00:00Z")
    answer = github("pull_request_review", early)
    assert answer.status_code == 400
    assert list(answer.json()) == ["review.submitted_at"]
    assert "before the pull request was opened" in answer.json()["review.submitted_at"][0]
    assert not PullRequestReview.objects.exists()


def gitlab_mr(action: str, user_id: int, updated: datetime, author_id: int = 1) -> dict:
    payload = json.loads(gitlab_docs("merge_request")["merge_request.open"])
    attributes = payload["object_attributes"]
    attributes.update(action=action, author_id=author_id, updated_at=iso(updated))
    payload["user"] = {"id": user_id, "username": f"person{user_id}", "name": "A Person"}
    payload.pop("changes", None)
    return payload


def test_gitlab_approval_and_approved_each_count_a_persons_approval():
    payload = gitlab_mr("approval", 5, minutes(10))
    attributes = payload["object_attributes"]
    repository = payload["project"]["path_with_namespace"]
    row = held_pr("gitlab", repository, attributes["iid"], minutes(0))
    # Two approvals required: "approval" for the first person, "approved" for the last.
    assert gitlab(payload).json() == {"outcome": "applied", "result": "updated"}
    last = gitlab(gitlab_mr("approved", 6, minutes(20)))
    assert last.json() == {"outcome": "applied", "result": "updated"}
    # GitLab may send both for one click: the same approver and time count once.
    twin = gitlab(gitlab_mr("approved", 6, minutes(20)))
    assert twin.json() == {"outcome": "unchanged", "result": "unchanged"}
    row.refresh_from_db()
    assert (row.review_rounds, row.first_review_at, row.approved_at) == (
        2,
        minutes(10),
        minutes(10),
    )
    # Taking one back, and the author approving their own: nothing.
    assert gitlab(gitlab_mr("unapproval", 5, minutes(30))).status_code == 202
    own = gitlab(gitlab_mr("approval", 1, minutes(31)))
    assert (own.status_code, own.json()["detail"]) == (
        202,
        "Ignored: an approval by the merge request's author.",
    )
    row.refresh_from_db()
    assert row.review_rounds == 2


@pytest.mark.parametrize(
    ("environment", "tier", "production"),
    [
        ("production", None, True),
        ("Production", None, True),
        ("PROD", None, True),
        ("prod-eu", "production", True),
        ("production", "staging", False),  # the platform's tier says otherwise
        ("staging", None, False),
        ("review/feature-1", "development", False),
    ],
)
def test_production_by_name_any_case_or_by_tier(metrics, environment, tier, production):
    payload = json.loads(gitlab_docs("deployment")["deployment.success"])
    payload.update(environment=environment, status_changed_at=iso(minutes(0)))
    if tier is None:
        del payload["environment_tier"]
    else:
        payload["environment_tier"] = tier
    before = metrics()
    answer = gitlab(payload)
    assert answer.json() == {"outcome": "applied", "result": "created"}
    row = Deployment.objects.get()
    assert row.is_production is production
    # GitLab's payload carries the short sha; the full one is the commit URL's end.
    assert row.commit_sha == "279484c09fbe69ededfced8c1bb6e6d24616b468"
    counted = "production" if production else environment
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_deployments_total", platform="gitlab", environment=counted, outcome="success"
        )
        == 1
    )


def test_production_environments_is_a_setting(settings, tamma):
    settings.TAMMA_METRICS = {"PRODUCTION_ENVIRONMENTS": ["live"]}
    item = {**WHERE, "status": "succeeded", "observed_at": iso(minutes(0))}
    post(tamma, "deployments", {**item, "external_id": "d1", "environment": "Live"})
    post(tamma, "deployments", {**item, "external_id": "d2", "environment": "production"})
    post(
        tamma,
        "deployments",
        {**item, "external_id": "d3", "environment": "x", "tier": "production"},
    )
    tiers = dict(Deployment.objects.values_list("external_id", "tier"))
    assert tiers == {"d1": "production", "d2": "", "d3": "production"}


def test_gitlab_incidents_by_type_with_gitlabs_severity():
    payload = json.loads(gitlab_docs("issue")["issue.open"])
    attributes = payload["object_attributes"]
    # GitLab's own example is an issue: not an incident (no type, no label).
    assert gitlab(payload).status_code == 202
    attributes.update(type="Incident", severity="critical")
    assert gitlab(payload).json() == {"outcome": "applied", "result": "created"}
    incident = Incident.objects.get()
    assert (incident.severity, incident.external_id) == ("critical", str(attributes["iid"]))
    # A work item of type incident is one too; GitLab's "unknown" severity says nothing.
    work_item = copy.deepcopy(payload)
    work_item["object_kind"] = "work_item"
    work_item["object_attributes"].update(iid=77, severity="unknown")
    work_item["labels"] = [{"title": "severity:low"}]
    assert gitlab(work_item).status_code == 200
    assert Incident.objects.get(external_id="77").severity == "low"


def test_merge_strategy_is_unknown_unless_the_sender_says(tamma, metrics):
    post(tamma, "issues", {**WHERE, "external_id": "1", "issue_type": "bug",
         "provider": "anthropic", "status": "in_progress", "observed_at": iso(T)})  # fmt: skip
    before = metrics()
    pr = {**WHERE, "issue_external_id": "1", "status": "merged", "observed_at": iso(T)}
    post(tamma, "pull-requests", {**pr, "number": 1})
    post(tamma, "pull-requests", {**pr, "number": 2, "merge_strategy": "rebase"})
    assert dict(PullRequest.objects.values_list("number", "merge_strategy")) == {
        1: "unknown",
        2: "rebase",
    }
    change = delta(metrics(), before)
    for strategy in ("unknown", "rebase"):
        assert change.total("tamma_prs_merged_total", merge_strategy=strategy) == 1


# -- hostile values: a clear 400, never a 500 ----------------------------------------------


def issue_item(**fields: Any) -> dict[str, Any]:
    return {
        **WHERE,
        "external_id": "9",
        "issue_type": "bug",
        "provider": "anthropic",
        "status": "in_progress",
        "observed_at": iso(T),
        **fields,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"platform": "github", "repository": "acme/shop", "external_id": NaN}', "external_id"),
        (
            '{"platform": "github", "repository": "acme/shop", "external_id": Infinity}',
            "external_id",
        ),  # fmt: skip
        ('{"platform": "github", "repository": "acme/shop", "external_id": 1e400}', "external_id"),
    ],
)
def test_keys_that_cannot_be_echoed_are_refused_not_500(tamma, body, field):
    answer = post(tamma, "issues", body)
    assert answer.status_code == 400
    result = answer.json()["results"][0]
    assert "key" not in result or result["key"] == {"platform": "github", "repository": "acme/shop"}
    assert field in result["errors"]


def test_a_lone_surrogate_is_refused_before_anything_is_echoed(tamma):
    body = '{"platform": "github", "repository": "acme/shop", "external_id": "\\ud800"}'
    answer = post(tamma, "issues", body)
    assert answer.status_code == 400
    assert "lone surrogate" in answer.json()["detail"]
    paired = post(tamma, "issues", json.dumps(issue_item(title="\U0001f600")))  # an emoji
    assert paired.status_code == 201


def test_numbers_are_numbers_and_event_ids_strings(tamma):
    post(tamma, "issues", issue_item(external_id="1"))
    pr = {**WHERE, "issue_external_id": "1", "status": "open", "observed_at": iso(T)}
    answer = post(tamma, "pull-requests", {**pr, "number": "7"})
    assert (answer.status_code, list(answer.json()["results"][0]["errors"])) == (400, ["number"])
    events = client_of(ORCHESTRATOR, "worker")
    for event_id in ("42", "NaN"):
        body = '{"type": "code_change", "event_id": ' + event_id + ', "change_type": "create", '
        body += '"language": "python", "actor": "system", "file_type": "source"}'
        refused = events.post("/api/v1/events", body, content_type="application/json")
        assert refused.status_code == 400, refused.content
        assert list(refused.json()["results"][0]["errors"]) == ["event_id"]


@pytest.mark.parametrize(
    ("kind", "first", "second", "field"),
    [
        ("issues", issue_item(started_at=iso(minutes(-10))),
         issue_item(status="succeeded", completed_at=iso(minutes(-20)),
                    observed_at=iso(minutes(1))), "completed_at"),
        ("issues", issue_item(created_at=iso(minutes(-10))),
         issue_item(started_at=iso(minutes(-20)), observed_at=iso(minutes(1))), "started_at"),
        ("incidents", {**WHERE, "external_id": "i", "severity": "high", "status": "open",
                       "opened_at": iso(minutes(0)), "observed_at": iso(minutes(0))},
         {**WHERE, "external_id": "i", "severity": "high", "status": "resolved",
          "resolved_at": iso(minutes(-1)), "observed_at": iso(minutes(1))}, "resolved_at"),
    ],
)  # fmt: skip
def test_times_that_contradict_the_rows_are_refused_naming_the_field(
    tamma, kind, first, second, field
):
    assert post(tamma, kind, first).status_code == 201
    answer = post(tamma, kind, second)
    assert answer.status_code == 400, answer.content
    assert list(answer.json()["results"][0]["errors"]) == [field]


def test_an_approval_decided_before_it_was_requested_is_refused(tamma):
    post(tamma, "issues", issue_item(external_id="1"))
    approval = {**WHERE, "issue_external_id": "1", "external_id": "a", "approval_type": "merge"}
    first = {**approval, "status": "pending", "requested_at": iso(minutes(0)),
             "observed_at": iso(minutes(0))}  # fmt: skip
    assert post(tamma, "approvals", first).status_code == 201
    later = {**approval, "status": "approved", "decided_at": iso(minutes(-30)),
             "observed_at": iso(minutes(1))}  # fmt: skip
    answer = post(tamma, "approvals", later)
    assert answer.status_code == 400
    assert answer.json()["results"][0]["errors"] == {
        "decided_at": [f"Must not be before requested_at ({iso(minutes(0))})."]
    }
    assert Approval.objects.get().status == "pending"


@pytest.mark.parametrize("moment", ["1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z"])
def test_times_before_2000_are_refused(tamma, moment):
    answer = post(tamma, "issues", issue_item(created_at=moment))
    assert answer.status_code == 400
    assert answer.json()["results"][0]["errors"] == {
        "created_at": ["Must not be before 2000-01-01."]
    }


def test_webhook_dates_that_do_not_exist_answer_400_every_time(octokit_review, metrics):
    impossible = review(octokit_review, review__submitted_at="2026-02-30T10:00:00Z")
    delivery = str(uuid.uuid4())
    before = metrics()
    for _ in range(2):  # a retry is refused the same way, never a 500
        answer = github("pull_request_review", impossible, delivery)
        assert answer.status_code == 400
        assert list(answer.json()) == ["review.submitted_at"]
    assert delta(metrics(), before).value(DELIVERIES, platform="github", outcome="rejected") == 2
    mr = gitlab_mr("update", 5, minutes(0))
    held_pr("gitlab", mr["project"]["path_with_namespace"], mr["object_attributes"]["iid"], T)
    mr["object_attributes"]["updated_at"] = "2026-02-30 10:00:00 UTC"
    answer = gitlab(mr)
    assert (answer.status_code, list(answer.json())) == (400, ["object_attributes.updated_at"])


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 5000 + b"]" * 5000, "JSON nested deeper than 32 levels."),
        (b'{"action": "opened", "number": NaN}', "NaN is not a JSON number"),
        (b'{"action": "opened", "number": 1e999}', "1e999 is too large a number"),
        (b'{"action": "\\udc00"}', "lone surrogate"),
    ],
)
def test_webhook_bodies_get_the_state_apis_limits(body, detail):
    answer = github("pull_request", body)
    assert answer.status_code == 400
    assert detail in answer.json()["detail"]
    assert not WebhookDelivery.objects.exists()


def test_an_unknown_severity_never_breaks_the_velocity_report(tamma):
    Escalation.objects.create(
        external_id="e1", escalation_type="x", severity="other", component="c", reason="r"
    )
    Escalation.objects.create(
        external_id="e2", escalation_type="x", severity="urgent", component="c", reason="r"
    )
    Escalation.objects.create(
        external_id="e3", escalation_type="x", severity="high", component="c", reason="r"
    )
    answer = client_of(PRODUCT_MANAGER, "pm").get("/api/v1/velocity", {"days": 7})
    assert answer.status_code == 200
    rows = [(row["severity"], row["count"]) for row in answer.json()["escalations"]]
    assert rows[0] == ("high", 1)
    assert sorted(rows[1:]) == [("other", 1), ("urgent", 1)]


# -- durations the histograms never reject --------------------------------------------------

DAY = 86_400.0
LONG = 200 * DAY  # past every duration family's top bucket (180 days at most)


def family_change(change, family: str, **labels: str) -> tuple[float, float, float]:
    """(_count, the +Inf bucket, the top finite bucket) of a histogram's change."""
    top = catalogue.get(family.removeprefix("tamma_")).buckets[-1]
    return (
        change.total(f"{family}_count", **labels),
        change.total(f"{family}_bucket", le="+Inf", **labels),
        change.total(f"{family}_bucket", le=floatToGoString(top), **labels),
    )


def test_a_long_recovery_counts_in_inf_and_in_the_report(tamma, metrics):
    before = metrics()
    opened = timezone.now().replace(microsecond=0) - timedelta(days=201)
    item = {**WHERE, "external_id": "i", "severity": "high", "opened_at": iso(opened)}
    post(tamma, "incidents", {**item, "status": "open", "observed_at": iso(opened)})
    resolved = opened + timedelta(seconds=LONG)
    answer = post(tamma, "incidents", {**item, "status": "resolved", "resolved_at": iso(resolved),
                  "observed_at": iso(resolved)})  # fmt: skip
    assert answer.status_code == 200
    change = delta(metrics(), before)
    family = "tamma_failed_deployment_recovery_seconds"
    assert family_change(change, family, platform="github") == (1, 1, 0)
    assert change.total(f"{family}_sum") == pytest.approx(LONG)
    assert change.total("tamma_metrics_errors_total", stage="rejected") == 0
    report = client_of(PRODUCT_MANAGER, "pm").get("/api/v1/delivery", {"days": 7}).json()
    assert report["keys"]["incidents_resolved"] == 1


def test_every_span_family_counts_a_long_span(tamma, metrics):
    """Issue completion, approval wait, pull request stages and lead time, each 200 days."""
    start = timezone.now().replace(microsecond=0) - timedelta(days=201)
    end = start + timedelta(seconds=LONG)
    before = metrics()
    post(tamma, "issues", issue_item(external_id="1", created_at=iso(start),
         started_at=iso(start), observed_at=iso(start)))  # fmt: skip
    approval = {**WHERE, "issue_external_id": "1", "external_id": "a", "approval_type": "merge",
                "requested_at": iso(start)}  # fmt: skip
    post(tamma, "approvals", {**approval, "status": "pending", "observed_at": iso(start)})
    post(tamma, "approvals", {**approval, "status": "approved", "decided_at": iso(end),
         "observed_at": iso(end)})  # fmt: skip
    pr = {**WHERE, "issue_external_id": "1", "number": 5, "created_at": iso(start),
          "first_review_at": iso(start)}  # fmt: skip
    post(tamma, "pull-requests", {**pr, "status": "open", "observed_at": iso(start)})
    post(tamma, "pull-requests", {**pr, "status": "merged", "merged_at": iso(end),
         "observed_at": iso(end)})  # fmt: skip
    post(tamma, "deployments", {**WHERE, "external_id": "d", "status": "succeeded",
         "started_at": iso(end), "finished_at": iso(end), "pull_requests": [5],
         "observed_at": iso(end)})  # fmt: skip
    post(tamma, "issues", issue_item(external_id="1", status="succeeded", completed_at=iso(end),
         observed_at=iso(end)))  # fmt: skip
    change = delta(metrics(), before)
    for family, labels in (
        ("tamma_issue_completion_duration_seconds", {}),
        ("tamma_approval_wait_duration_seconds", {"approval_type": "merge"}),
        ("tamma_pr_stage_duration_seconds", {"stage": "review"}),
        ("tamma_change_lead_time_seconds", {}),
    ):
        assert family_change(change, family, **labels) == (1, 1, 0), family
        assert change.total(f"{family}_sum", **labels) == pytest.approx(LONG), family
    assert change.total("tamma_metrics_errors_total", stage="rejected") == 0
    pm = client_of(PRODUCT_MANAGER, "pm")
    report = pm.get("/api/v1/delivery", {"days": 7}).json()
    assert report["keys"]["changes_deployed"] == 1
    stages = {row["stage"]: row["pull_requests"] for row in report["stages"]}
    assert stages["review"] == 1
    velocity = pm.get("/api/v1/velocity", {"days": 7}).json()
    assert velocity["totals"]["completed"] == 1
    waits = {row["approval_type"]: row for row in velocity["approval_wait_hours"]}
    assert waits["merge"]["count"] == 1
    assert waits["merge"]["median"] == round(LONG / 3600, 3)


def test_negative_spans_are_zero_on_the_page_and_on_metrics(metrics):
    """Rows written around the state API (the ORM) may still run backwards: the report and
    the counters count such a span as 0 alike."""
    before = metrics()
    issue = issue_row(**WHERE)
    Approval.objects.create(
        issue=issue,
        external_id="a",
        approval_type="merge",
        status="approved",
        requested_at=timezone.now() - timedelta(hours=1),
        decided_at=timezone.now() - timedelta(hours=2),
    )
    change = delta(metrics(), before)
    family = "tamma_approval_wait_duration_seconds"
    assert change.total(f"{family}_count") == 1 and change.total(f"{family}_sum") == 0
    velocity = client_of(PRODUCT_MANAGER, "pm").get("/api/v1/velocity", {"days": 7}).json()
    waits = {row["approval_type"]: row for row in velocity["approval_wait_hours"]}
    assert waits["merge"]["median"] == 0.0 and waits["merge"]["count"] == 1


def test_every_real_example_is_answered_without_a_5xx_the_gitlab_ones_too():
    """A smoke of the whole GitLab documentation corpus with dates at UTC and today."""
    for name, body in gitlab_docs().items():
        answer = gitlab(body)
        assert answer.status_code < 500, (name, answer.content)


_ = UTC  # the module's times are aware; UTC kept for readers


# -- any value in any field: never a 5xx ----------------------------------------------------

VALID_ITEMS: dict[str, dict[str, Any]] = {
    "issues": issue_item(external_id="f"),
    "pull-requests": {
        **WHERE,
        "number": 3,
        "issue_external_id": "f",
        "status": "open",
        "created_at": iso(T),
        "observed_at": iso(T),
    },  # fmt: skip
    "approvals": {
        **WHERE,
        "issue_external_id": "f",
        "external_id": "a",
        "approval_type": "m",
        "status": "pending",
        "observed_at": iso(T),
    },  # fmt: skip
    "escalations": {
        "external_id": "e",
        "escalation_type": "t",
        "severity": "high",
        "component": "c",
        "reason": "r",
        "observed_at": iso(T),
    },  # fmt: skip
    "deployments": {
        **WHERE,
        "external_id": "d",
        "status": "succeeded",
        "pull_requests": [3],
        "observed_at": iso(T),
    },  # fmt: skip
    "incidents": {
        **WHERE,
        "external_id": "i",
        "severity": "high",
        "status": "open",
        "observed_at": iso(T),
    },  # fmt: skip
}
SPECIAL = st.sampled_from(
    [float("nan"), float("inf"), float("-inf"), 2**64, -(2**63), 10**400, "\ud800", "\udfff",
     "2026-02-30T10:00:00Z", "1970-01-01T00:00:00Z", "7", "", None, True, [], {}]
)  # fmt: skip
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | SPECIAL,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=5,
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_value_in_any_field_of_a_state_item_is_never_a_5xx(tamma, data):
    """NaN, infinities, numbers past any column, lone surrogates, impossible dates, strings
    for numbers, nesting: each answered 2xx or 4xx, in the state API's one shape."""
    if not Issue.objects.filter(external_id="f").exists():
        post(tamma, "issues", VALID_ITEMS["issues"])
        post(tamma, "pull-requests", VALID_ITEMS["pull-requests"])
    kind = data.draw(st.sampled_from(sorted(VALID_ITEMS)), label="kind")
    item = dict(VALID_ITEMS[kind])
    name = data.draw(st.sampled_from([*sorted(item), "extra"]), label="field")
    item[name] = data.draw(ANY_JSON, label="value")
    body = json.dumps(item)  # NaN and Infinity as their literals, surrogates as \ud800
    answer = post(tamma, kind, body)
    assert answer.status_code < 500, answer.content
    assert answer.status_code in (200, 201, 400, 404, 409), answer.content
    assert isinstance(answer.json(), dict)
