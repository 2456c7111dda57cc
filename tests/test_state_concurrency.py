"""Races on the state API: many threads post the same change at the same moment, each
with its own database connection, and the change is written and counted once.

The threads run in another process on the demo site's settings and a real database of
this run (a SQLite file, or a fresh PostgreSQL database on the PostgreSQL run), because
the suite's in-memory SQLite cannot be shared by connections that wait for each other's
locks. A barrier releases every thread's request together. (Gunicorn workers:
tests/e2e/test_state_gunicorn.py.)
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from tamma_metrics import state
from tamma_metrics.api.state import SERIALIZERS
from tamma_metrics.models import Issue
from tests.utils import delta, parse, process_env, run_python

THREADS = 8

RACE = """
import json, sys, threading
import django
django.setup()
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from tamma_metrics.models import ApiToken, Approval, Issue, PullRequest
from tamma_metrics.roles import ORCHESTRATOR, seed_roles

scenario = json.loads(sys.argv[1])
seed_roles()
user = User.objects.create_user("tamma")
user.groups.add(Group.objects.get(name=ORCHESTRATOR))
auth = "Bearer " + ApiToken.create_for(user, "race")[1]


def post(path, items):
    response = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=auth).post(
        "/api/v1/" + path, json.dumps({"items": items}), content_type="application/json"
    )
    return response.status_code, [r["status"] for r in response.json()["results"]]


# One request first: django_prometheus builds its metrics when the first handler loads
# the middleware, which threads doing it together would race on.
assert Client(HTTP_HOST="127.0.0.1").get("/metrics/health").status_code in (200, 503)
for path, items in scenario["before"]:
    assert post(path, items)[0] in (200, 201)
barrier = threading.Barrier(len(scenario["race"]))
answers = [None] * len(scenario["race"])


def run(n, path, items):
    try:
        barrier.wait(timeout=60)
        answers[n] = post(path, items)
    except Exception as error:
        answers[n] = [0, [repr(error)]]
    finally:
        connection.close()


threads = [
    threading.Thread(target=run, args=(n, path, items))
    for n, (path, items) in enumerate(scenario["race"])
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=120)
metrics = Client(HTTP_HOST="127.0.0.1").get("/metrics").content.decode()
print(json.dumps({
    "answers": answers,
    "issues": dict(Issue.objects.values_list("external_id", "status")),
    "prs": dict(PullRequest.objects.values_list("number", "status")),
    "approvals": dict(Approval.objects.values_list("external_id", "status")),
    "metrics": metrics,
}))
"""


@pytest.fixture
def race(tmp_path, process_database_url):
    """Call with (before, race): requests posted one by one, then the racing ones, one
    per thread; the answers, the rows and the samples of /metrics afterwards."""
    env = process_env(tmp_path, process_database_url)
    run_python("manage.py", "migrate", "-v0", env=env)

    def run(before: list, racing: list) -> dict:
        scenario = json.dumps({"before": before, "race": racing})
        result = json.loads(run_python("-c", RACE, scenario, env=env).stdout)
        result["metrics"] = parse(result["metrics"])
        return result

    return run


NOW = timezone.now().replace(microsecond=0)


def at(minutes: float) -> str:
    return (NOW - timedelta(hours=2) + timedelta(minutes=minutes)).isoformat()


def issue(external_id: str, status: str, minutes: float, **fields) -> dict:
    return {
        "platform": "github",
        "repository": "acme/race",
        "external_id": external_id,
        "issue_type": "bug",
        "provider": "openai",
        "status": status,
        "created_at": at(0),
        "observed_at": at(minutes),
        **fields,
    }


def statuses(answers: list) -> list[str]:
    return sorted(status for _, items in answers for status in items)


PROCESSED = "tamma_issues_processed_total"


def test_the_same_new_issue_posted_at_once_is_created_and_counted_once(race):
    ended = issue("1", "succeeded", 30, started_at=at(1))
    result = race([], [("issues", [ended])] * THREADS)
    assert statuses(result["answers"]) == ["created"] + ["unchanged"] * (THREADS - 1)
    assert result["issues"] == {"1": "succeeded"}
    assert result["metrics"].total(PROCESSED, outcome="success") == 1
    assert result["metrics"].total(PROCESSED) == 1


def test_the_same_transition_posted_at_once_is_counted_once(race):
    result = race(
        [("issues", [issue("1", "in_progress", 1)])],
        [("issues", [issue("1", "failed", 30)])] * THREADS,
    )
    assert statuses(result["answers"]) == ["unchanged"] * (THREADS - 1) + ["updated"]
    assert result["issues"] == {"1": "failed"}
    assert result["metrics"].total(PROCESSED, outcome="failure") == 1
    assert result["metrics"].total(PROCESSED) == 1


def test_different_ends_at_once_leave_the_newest_and_count_it_alone(race):
    """Observations of one issue at different times, all at once: whichever thread
    goes first, the newest wins and only the state the row ends in is counted."""
    ends = [issue("1", "in_progress", n) for n in range(1, THREADS)]
    ends.append(issue("1", "timed_out", 60))
    result = race([], [("issues", [item]) for item in ends])
    assert result["issues"] == {"1": "timed_out"}
    assert result["metrics"].total(PROCESSED, outcome="timeout") == 1
    assert result["metrics"].total(PROCESSED) == 1
    assert statuses(result["answers"]).count("created") == 1


def test_overlapping_batches_in_different_orders_count_each_issue_once(race):
    """Twenty issues in every thread's batch, each thread in its own order: batches lock
    rows in key order, so they neither deadlock nor count twice."""
    items = [issue(str(n), "succeeded", 30, started_at=at(1)) for n in range(20)]
    orders = [items[k:] + items[:k] for k in range(0, 20, 20 // THREADS or 1)][:THREADS]
    orders[1] = list(reversed(items))
    result = race([], [("issues", order) for order in orders])
    answered = statuses(result["answers"])
    assert answered.count("created") == 20
    assert answered.count("unchanged") == 20 * (THREADS - 1)
    assert result["issues"] == {str(n): "succeeded" for n in range(20)}
    assert result["metrics"].total(PROCESSED, outcome="success") == 20


def test_a_decision_and_a_pull_request_posted_at_once_count_once(race):
    approval = {
        "platform": "github",
        "repository": "acme/race",
        "issue_external_id": "1",
        "external_id": "plan",
        "approval_type": "plan",
        "requested_at": at(2),
    }
    pull_request = {
        "platform": "github",
        "repository": "acme/race",
        "number": 9,
        "issue_external_id": "1",
        "created_at": at(5),
    }
    result = race(
        [
            ("issues", [issue("1", "in_progress", 1)]),
            ("approvals", [{**approval, "status": "pending", "observed_at": at(2)}]),
        ],
        [
            ("approvals", [{**approval, "status": "approved", "observed_at": at(4)}]),
            ("pull-requests", [{**pull_request, "status": "merged", "observed_at": at(9)}]),
        ]
        * (THREADS // 2),
    )
    assert statuses(result["answers"]) == sorted(
        ["created"] + ["updated"] + ["unchanged"] * (THREADS - 2)
    )
    assert result["approvals"] == {"plan": "approved"}
    assert result["prs"] == {"9": "merged"}
    samples = result["metrics"]
    assert samples.total("tamma_approval_wait_duration_seconds_count", outcome="approved") == 1
    assert samples.total("tamma_approval_wait_duration_seconds_sum") == 2 * 60
    assert samples.total("tamma_prs_created_total") == 1
    assert samples.total("tamma_prs_merged_total") == 1
    assert samples.total("tamma_pending_approvals") == 0


def test_deployments_shipping_one_change_at_once_count_its_lead_time_once(race):
    """Eight production deployments of the same pull request at the same moment: the
    change reaches production once, so its lead time and deploy stage count once."""
    pull_request = {
        "platform": "github",
        "repository": "acme/race",
        "number": 9,
        "issue_external_id": "1",
        "status": "merged",
        "created_at": at(2),
        "merged_at": at(20),
        "observed_at": at(20),
    }
    deployments = [
        {
            "platform": "github",
            "repository": "acme/race",
            "external_id": f"deploy-{n}",
            "status": "succeeded",
            "started_at": at(30),
            "finished_at": at(40),
            "pull_requests": [9],
            "observed_at": at(40),
        }
        for n in range(THREADS)
    ]
    result = race(
        [("issues", [issue("1", "succeeded", 30, started_at=at(1))]),
         ("pull-requests", [pull_request])],
        [("deployments", [item]) for item in deployments],
    )  # fmt: skip
    assert statuses(result["answers"]) == ["created"] * THREADS
    samples = result["metrics"]
    assert samples.total("tamma_deployments_total", outcome="success") == THREADS
    assert samples.total("tamma_change_lead_time_seconds_count") == 1
    assert samples.total("tamma_change_lead_time_seconds_sum") == 38 * 60
    deploy = "tamma_pr_stage_duration_seconds_count"
    assert samples.total(deploy, stage="deploy") == 1


@pytest.mark.django_db(transaction=True)
def test_a_batch_inside_a_transaction_that_rolls_back_counts_nothing(metrics):
    """A caller's own transaction around the writer: its rollback takes the rows and
    the counts with it (they are recorded on commit)."""
    serializer = SERIALIZERS["issues"](data=issue("1", "succeeded", 30, started_at=at(1)))
    assert serializer.is_valid(), serializer.errors
    items = [dict(serializer.validated_data)]
    before = metrics()

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), transaction.atomic():
        assert [o.status for o in state.apply("issues", items)] == ["created"]
        raise Abandoned
    assert not Issue.objects.exists()
    assert delta(metrics(), before).total(PROCESSED) == 0
    # The same batch committed counts once.
    assert [o.status for o in state.apply("issues", items)] == ["created"]
    assert delta(metrics(), before).total(PROCESSED) == 1
