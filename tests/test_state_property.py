"""Any order, any duplicates, any batching: the rows converge to each object's newest
observation, every transition is counted exactly once, and /metrics and the velocity
report say what the rows say.

Hypothesis draws lifecycles as Tamma lives them (an issue queued, worked on, waiting for
approval, maybe ended; an approval requested, maybe decided; a pull request opened,
maybe merged or closed; maybe an escalation), then delivers every observation once or
twice, shuffled, in batches of any size. An item that arrives before its issue is
answered ``not_found`` and is sent again at the end, as the client does. Every counter
is then compared with what the rows say, and with what the lifecycles said.
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tamma_metrics.models import Approval, Escalation, Issue, PullRequest
from tamma_metrics.roles import ORCHESTRATOR, PRODUCT_MANAGER
from tests.utils import client_of, delta

pytestmark = pytest.mark.django_db(transaction=True)

ACTIVE = ("in_progress", "awaiting_approval")
ENDS = ("succeeded", "failed", "timed_out", "cancelled")
DECISIONS = ("approved", "rejected", "expired")
PROVIDERS = ("anthropic", "openai")
REPOSITORY = {"platform": "github", "repository": "acme/property"}
MINUTE = timedelta(minutes=1)


@dataclass
class Life:
    """One issue's observations in time order, and those of its approval, pull request
    and escalation."""

    external_id: str
    provider: str
    statuses: list[str]
    decision: str | None  # None: no approval; "pending": requested, never decided
    pull_request: str | None  # None: none; else its last status
    escalated: bool
    items: dict[str, list[dict]] = field(default_factory=lambda: collections.defaultdict(list))


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
        life.items["issues"].append(item)
    if life.decision is not None:
        requested = base + 30 * MINUTE
        approval = {
            **REPOSITORY,
            "issue_external_id": life.external_id,
            "external_id": f"plan-{life.external_id}",
            "approval_type": "plan",
            "requested_at": wire(requested),
        }
        life.items["approvals"].append(
            {**approval, "status": "pending", "observed_at": wire(requested)}
        )
        if life.decision != "pending":
            decided = requested + 7 * MINUTE
            life.items["approvals"].append(
                {
                    **approval,
                    "status": life.decision,
                    "decided_at": wire(decided),
                    "observed_at": wire(decided),
                }
            )
    if life.pull_request is not None:
        opened = base + 20 * MINUTE
        pull_request = {
            **REPOSITORY,
            "number": int(life.external_id),
            "issue_external_id": life.external_id,
            "merge_strategy": "squash",
            "created_at": wire(opened),
        }
        life.items["pull-requests"].append(
            {**pull_request, "status": "open", "observed_at": wire(opened)}
        )
        if life.pull_request != "open":
            ended = opened + 11 * MINUTE
            end = {**pull_request, "status": life.pull_request, "observed_at": wire(ended)}
            if life.pull_request == "merged":
                end["merged_at"] = wire(ended)
            life.items["pull-requests"].append(end)
    if life.escalated:
        life.items["escalations"].append(
            {
                **REPOSITORY,
                "external_id": f"esc-{life.external_id}",
                "issue_external_id": life.external_id,
                "escalation_type": "blocked",
                "severity": "high",
                "component": "git",
                "reason": "no_access",
                "observed_at": wire(base + 3 * MINUTE),
            }
        )
    return life


@st.composite
def lives(draw) -> list[Life]:
    drawn = []
    for n in range(draw(st.integers(1, 12))):
        statuses = ["queued"] if draw(st.booleans()) else []
        statuses += draw(st.lists(st.sampled_from(ACTIVE), max_size=3))
        end = draw(st.sampled_from((None, *ENDS)))
        if end:
            statuses.append(end)
        decision = draw(st.sampled_from((None, "pending", *DECISIONS)))
        pull_request = draw(st.sampled_from((None, "open", "merged", "closed")))
        provider = draw(st.sampled_from(PROVIDERS))
        life = Life(
            str(100 + n),
            provider,
            statuses or ["queued"],
            decision,
            pull_request,
            draw(st.booleans()),
        )
        drawn.append(life)
    return drawn


@st.composite
def deliveries(draw) -> tuple[list[Life], list[tuple[str, list[dict]]]]:
    """The lives, and the requests that deliver them: (path, items)."""
    base = timezone.now().replace(microsecond=0) - 3 * timedelta(hours=1)
    drawn = [observed(life, base) for life in draw(lives())]
    sent = [(path, item) for life in drawn for path, items in life.items.items() for item in items]
    sent += [entry for entry in sent if draw(st.booleans())]  # some are sent twice
    sent = draw(st.permutations(sent))
    requests: list[tuple[str, list[dict]]] = []
    for path, item in sent:
        if requests and requests[-1][0] == path and draw(st.booleans()):
            requests[-1][1].append(item)  # the same batch
        else:
            requests.append((path, [item]))
    return drawn, requests


def post(client: Client, path: str, items: list[dict]) -> list[dict]:
    response = client.post(
        f"/api/v1/{path}", json.dumps({"items": items}), content_type="application/json"
    )
    assert response.status_code in (200, 201, 404), response.content.decode()[-1500:]
    return response.json()["results"]


@pytest.fixture
def clients():
    return client_of(ORCHESTRATOR, "tamma"), client_of(PRODUCT_MANAGER, "pm")


@given(case=deliveries())
@settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_delivery_converges_and_counts_each_transition_once(case, clients, metrics, settings):
    settings.TAMMA_METRICS = {
        "API_THROTTLE_RATE": "100000/m",
        "THROTTLE_RATE": "100000/m",
        "REPORTS_CACHE_SECONDS": 0,
        "DATABASE_CACHE_SECONDS": 0,
    }
    Escalation.objects.all().delete()  # each example starts empty
    Issue.objects.all().delete()  # (pull requests and approvals go with their issues)
    tamma, pm = clients
    drawn, requests = case
    before = metrics()

    answers: collections.Counter[str] = collections.Counter()
    resend: dict[str, list[dict]] = collections.defaultdict(list)
    for path, items in requests:
        for item, result in zip(items, post(tamma, path, items), strict=True):
            answers[result["status"]] += 1
            if result["status"] == "not_found":
                assert path != "issues"  # an item ahead of its issue
                resend[path].append(item)
    for path, items in resend.items():
        for result in post(tamma, path, items):
            answers[result["status"]] += 1
            assert result["status"] != "not_found"

    objects = sum(len(items) > 0 for life in drawn for items in life.items.values())
    assert answers["created"] == objects
    assert set(answers) <= {"created", "updated", "unchanged", "stale", "not_found"}

    # Each row holds its newest observation.
    for life in drawn:
        row = Issue.objects.get(external_id=life.external_id)
        newest = life.items["issues"][-1]
        assert (row.status, wire(row.observed_at)) == (newest["status"], newest["observed_at"])
        started = wire(row.started_at) if row.started_at else None
        assert started == newest.get("started_at")
        assert [a.status for a in row.approvals.all()] == [life.decision] * (
            life.decision is not None
        )
        assert [p.status for p in row.pull_requests.all()] == [life.pull_request] * (
            life.pull_request is not None
        )
        assert row.escalations.count() == life.escalated

    # Every counter equals what the rows say, and what the lifecycles said.
    change = delta(metrics(), before)
    expected = collections.Counter(
        (life.provider, Issue.OUTCOMES[life.statuses[-1]])
        for life in drawn
        if life.statuses[-1] in Issue.OUTCOMES
    )
    for provider in PROVIDERS:
        for outcome, status in ((o, s) for s, o in Issue.OUTCOMES.items()):
            labels = {"provider": provider, "outcome": outcome}
            rows = Issue.objects.filter(provider=provider, status=status).count()
            counted = change.total("tamma_issues_processed_total", **labels)
            assert counted == rows == expected[(provider, outcome)], labels
    ended = Issue.objects.filter(status__in=Issue.OUTCOMES).exclude(started_at=None)
    # Sums are differences of two large floats (the process's running totals): approx.
    assert change.total("tamma_issue_completion_duration_seconds_sum") == pytest.approx(
        sum((row.completed_at - row.started_at).total_seconds() for row in ended), abs=1e-6
    )
    for outcome in DECISIONS:
        rows = Approval.objects.filter(status=outcome).count()
        assert rows == sum(life.decision == outcome for life in drawn)
        counted = change.total("tamma_approval_wait_duration_seconds_count", outcome=outcome)
        assert counted == rows, outcome
        waited = change.total("tamma_approval_wait_duration_seconds_sum", outcome=outcome)
        assert waited == pytest.approx(rows * 7 * 60, abs=1e-6)
    prs = PullRequest.objects.count()
    merged = PullRequest.objects.filter(status="merged").count()
    assert prs == sum(life.pull_request is not None for life in drawn)
    assert merged == sum(life.pull_request == "merged" for life in drawn)
    assert change.total("tamma_prs_created_total") == prs
    assert change.total("tamma_prs_merged_total") == merged
    escalations = Escalation.objects.count()
    assert escalations == sum(life.escalated for life in drawn)
    assert change.total("tamma_escalations_total") == escalations
    # Gauges from the rows.
    samples = metrics()
    pending = Approval.objects.filter(status="pending").count()
    assert pending == sum(life.decision == "pending" for life in drawn)
    assert samples.total("tamma_pending_approvals") == pending
    queued = Issue.objects.filter(status="queued").count()
    assert queued == sum(life.statuses[-1] == "queued" for life in drawn)
    assert samples.total("tamma_queue_depth", queue_type="issues") == queued

    # The product manager's report agrees.
    report = pm.get("/api/v1/velocity", {"days": 7}).json()
    assert report["totals"]["completed"] == sum(expected.values())
    assert report["totals"]["succeeded"] == sum(
        n for (_, o), n in expected.items() if o == "success"
    )
    assert report["totals"]["prs_opened"] == prs
    assert report["totals"]["prs_merged"] == merged
    finished = [life for life in drawn if life.statuses[-1] in Issue.OUTCOMES]
    autonomy = report["autonomy"]
    assert (autonomy["finished"], autonomy["without_escalation"]) == (
        len(finished),
        sum(not life.escalated for life in finished),
    )
