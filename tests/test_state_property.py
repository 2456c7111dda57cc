"""Any order, any duplicates, any batching: the rows converge to each object's newest
observation, every transition is counted exactly once, and /metrics and the velocity
report say what the rows say.

Hypothesis draws lifecycles as Tamma lives them (an issue queued, worked on, waiting for
approval, maybe ended; an approval requested, maybe decided), then delivers every
observation once or twice, shuffled, in batches of any size. An approval that arrives
before its issue is answered ``not_found`` and is sent again at the end, as the client
does.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tamma_metrics.models import ApiToken, Approval, Issue
from tamma_metrics.roles import ORCHESTRATOR, PRODUCT_MANAGER, seed_roles
from tests.utils import delta

pytestmark = pytest.mark.django_db(transaction=True)

ACTIVE = ("in_progress", "awaiting_approval")
ENDS = ("succeeded", "failed", "timed_out", "cancelled")
DECISIONS = ("approved", "rejected", "expired")
PROVIDERS = ("anthropic", "openai")
REPOSITORY = {"platform": "github", "repository": "acme/property"}
MINUTE = timedelta(minutes=1)


@dataclass
class Life:
    """One issue's observations in time order, and its approval's."""

    external_id: str
    provider: str
    statuses: list[str]
    decision: str | None  # None: no approval; "pending": requested, never decided
    issue_items: list[dict] = field(default_factory=list)
    approval_items: list[dict] = field(default_factory=list)


def wire(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def observed(life: Life, base: datetime) -> Life:
    """The items Tamma sends for ``life``: each carries the times it knows by then."""
    started = None
    for step, status in enumerate(life.statuses, start=1):
        moment = base + step * MINUTE
        if status != "queued" and started is None:
            started = moment
        item = {
            **REPOSITORY,
            "external_id": life.external_id,
            "issue_type": "feature",
            "provider": life.provider,
            "status": status,
            "created_at": wire(base),
            "observed_at": wire(moment),
        }
        if started is not None:
            item["started_at"] = wire(started)
        if status in ENDS:
            item["completed_at"] = wire(moment)
        life.issue_items.append(item)
    if life.decision is not None:
        requested = base + 30 * MINUTE
        approval = {
            **REPOSITORY,
            "issue_external_id": life.external_id,
            "external_id": f"plan-{life.external_id}",
            "approval_type": "plan",
            "requested_at": wire(requested),
        }
        life.approval_items.append(
            {**approval, "status": "pending", "observed_at": wire(requested)}
        )
        if life.decision != "pending":
            decided = requested + 7 * MINUTE
            life.approval_items.append(
                {
                    **approval,
                    "status": life.decision,
                    "decided_at": wire(decided),
                    "observed_at": wire(decided),
                }
            )
    return life


@st.composite
def lives(draw) -> list[Life]:
    drawn = []
    for n in range(draw(st.integers(1, 3))):
        statuses = ["queued"] if draw(st.booleans()) else []
        statuses += draw(st.lists(st.sampled_from(ACTIVE), max_size=3))
        end = draw(st.sampled_from((None, *ENDS)))
        if end:
            statuses.append(end)
        decision = draw(st.sampled_from((None, "pending", *DECISIONS)))
        provider = draw(st.sampled_from(PROVIDERS))
        drawn.append(Life(str(100 + n), provider, statuses or ["queued"], decision))
    return drawn


@st.composite
def deliveries(draw) -> tuple[list[Life], list[tuple[str, list[dict]]]]:
    """The lives, and the requests that deliver them: (path, items)."""
    base = timezone.now().replace(microsecond=0) - 3 * timedelta(hours=1)
    drawn = [observed(life, base) for life in draw(lives())]
    sent = [("issues", item) for life in drawn for item in life.issue_items]
    sent += [("approvals", item) for life in drawn for item in life.approval_items]
    sent += [entry for entry in sent if draw(st.booleans())]  # some are sent twice
    sent = draw(st.permutations(sent))
    requests: list[tuple[str, list[dict]]] = []
    for path, item in sent:
        if requests and requests[-1][0] == path and draw(st.booleans()):
            requests[-1][1].append(item)  # the same batch
        else:
            requests.append((path, [item]))
    return drawn, requests


def client_of(role: str, username: str) -> Client:
    user = User.objects.create_user(username)
    user.groups.add(Group.objects.get(name=role))
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.create_for(user, 't')[1]}")


def post(client: Client, path: str, items: list[dict]) -> list[dict]:
    response = client.post(
        f"/api/v1/{path}", json.dumps({"items": items}), content_type="application/json"
    )
    assert response.status_code in (200, 201, 404), response.content[:500]
    return response.json()["results"]


@pytest.fixture
def clients():
    seed_roles()
    return client_of(ORCHESTRATOR, "tamma"), client_of(PRODUCT_MANAGER, "pm")


@given(case=deliveries())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_delivery_converges_and_counts_each_transition_once(case, clients, metrics, settings):
    settings.TAMMA_METRICS = {
        "API_THROTTLE_RATE": "100000/m",
        "THROTTLE_RATE": "100000/m",
        "REPORTS_CACHE_SECONDS": 0,
        "DATABASE_CACHE_SECONDS": 0,
    }
    Issue.objects.all().delete()  # each example starts empty (approvals go with them)
    tamma, pm = clients
    drawn, requests = case
    before = metrics()

    answers: collections.Counter[str] = collections.Counter()
    resend: list[dict] = []
    for path, items in requests:
        for item, result in zip(items, post(tamma, path, items), strict=True):
            answers[result["status"]] += 1
            if result["status"] == "not_found":
                assert path == "approvals"  # an approval ahead of its issue
                resend.append(item)
    if resend:
        for result in post(tamma, "approvals", resend):
            answers[result["status"]] += 1
            assert result["status"] != "not_found"

    approvals = [life for life in drawn if life.decision is not None]
    assert answers["created"] == len(drawn) + len(approvals)
    assert set(answers) <= {"created", "updated", "unchanged", "stale", "not_found"}

    # Each row holds its newest observation.
    for life in drawn:
        row = Issue.objects.get(external_id=life.external_id)
        newest = life.issue_items[-1]
        assert (row.status, wire(row.observed_at)) == (newest["status"], newest["observed_at"])
        started = wire(row.started_at) if row.started_at else None
        assert started == newest.get("started_at")
        if life.decision is not None:
            decided = Approval.objects.get(issue=row)
            assert decided.status == life.decision

    # Each transition counted once: issues that ended with an outcome, decided approvals.
    change = delta(metrics(), before)
    expected = collections.Counter(
        (life.provider, Issue.OUTCOMES[life.statuses[-1]])
        for life in drawn
        if life.statuses[-1] in Issue.OUTCOMES
    )
    for provider in PROVIDERS:
        for outcome in Issue.OUTCOMES.values():
            labels = {"provider": provider, "outcome": outcome}
            assert (
                change.total("tamma_issues_processed_total", **labels)
                == expected[(provider, outcome)]
            ), labels
    rows = Issue.objects.filter(status__in=Issue.OUTCOMES).exclude(started_at=None)
    assert change.total("tamma_issue_completion_duration_seconds_sum") == sum(
        (row.completed_at - row.started_at).total_seconds() for row in rows
    )
    for outcome in DECISIONS:
        decided = sum(life.decision == outcome for life in approvals)
        assert (
            change.total("tamma_approval_wait_duration_seconds_count", outcome=outcome) == decided
        )
        assert (
            change.total("tamma_approval_wait_duration_seconds_sum", outcome=outcome)
            == decided * 7 * 60
        )
    # Gauges from the rows.
    pending = sum(life.decision == "pending" for life in approvals)
    assert metrics().total("tamma_pending_approvals") == pending
    queued = sum(life.statuses[-1] == "queued" for life in drawn)
    assert metrics().total("tamma_queue_depth", queue_type="issues") == queued

    # The product manager's report agrees.
    report = pm.get("/api/v1/velocity", {"days": 7}).json()["totals"]
    assert report["completed"] == sum(expected.values())
    assert report["succeeded"] == sum(n for (_, o), n in expected.items() if o == "success")
