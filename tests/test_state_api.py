"""The state API, item by item: each answer, the lifecycle, labels, permissions and every
bad input with its exact status and field. (Hypothesis lifecycles: test_state_property;
races: test_state_concurrency.)"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import DatabaseError, IntegrityError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tamma_metrics import budget, state
from tamma_metrics.models import (
    Approval,
    AutonomousLoop,
    Escalation,
    Issue,
    PullRequest,
)
from tamma_metrics.roles import ORCHESTRATOR, PROMETHEUS, WORKER
from tamma_metrics.state import writer
from tests.utils import client_of, delta

pytestmark = pytest.mark.django_db(transaction=True)

T0 = timezone.now().replace(microsecond=0) - timedelta(days=1)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def issue(status: str = "queued", minutes: float = 0, **fields) -> dict:
    return {
        "platform": "github",
        "repository": "acme/shop",
        "external_id": "42",
        "issue_type": "bug",
        "provider": "anthropic",
        "status": status,
        "created_at": at(0),
        "observed_at": at(minutes),
        **fields,
    }


def pr(status: str = "open", minutes: float = 10, **fields) -> dict:
    return {
        "platform": "github",
        "repository": "acme/shop",
        "number": 7,
        "issue_external_id": "42",
        "status": status,
        "created_at": at(10),
        "observed_at": at(minutes),
        **fields,
    }


def approval(status: str = "pending", minutes: float = 5, **fields) -> dict:
    return {
        "platform": "github",
        "repository": "acme/shop",
        "issue_external_id": "42",
        "external_id": "plan-1",
        "approval_type": "plan",
        "status": status,
        "requested_at": at(5),
        "observed_at": at(minutes),
        **fields,
    }


ESCALATION = {
    "external_id": "esc-1",
    "escalation_type": "blocked",
    "severity": "high",
    "component": "git",
    "reason": "no_access",
    "observed_at": at(3),
}
LOOP = {
    "name": "main",
    "mode": "orchestrator",
    "environment": "production",
    "status": "running",
}


@pytest.fixture
def tamma() -> Client:
    return client_of(ORCHESTRATOR, "tamma")


def post(client: Client, path: str, body, **extra):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(f"/api/v1/{path}", raw, content_type="application/json", **extra)


def answer(response) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("index", "key")}
        for r in response.json()["results"]
    ]


# -- the answers ------------------------------------------------------------------


def test_an_issue_is_created_then_moved_then_ends_counted_once(tamma, metrics):
    before = metrics()
    created = post(tamma, "issues", issue())
    assert created.status_code == 201
    assert created.json() == {
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "stale": 0,
        "rejected": 0,
        "not_found": 0,
        "conflicts": 0,
        "results": [
            {
                "index": 0,
                "key": {"platform": "github", "repository": "acme/shop", "external_id": "42"},
                "status": "created",
            }
        ],
    }
    assert post(tamma, "issues", issue("in_progress", 2)).status_code == 200
    done = post(tamma, "issues", issue("succeeded", 62))
    assert answer(done) == [{"status": "updated"}]
    again = post(tamma, "issues", issue("succeeded", 62))
    assert answer(again) == [{"status": "unchanged"}]

    row = Issue.objects.get()
    assert (row.status, row.observed_at.isoformat()) == (
        "succeeded",
        (T0 + timedelta(62) / 1440).isoformat(),
    )
    # Times left out come from the observation that called for them, not the server clock.
    assert row.created_at == T0
    assert row.started_at == T0 + timedelta(minutes=2)
    assert row.completed_at == T0 + timedelta(minutes=62)
    change = delta(metrics(), before)
    labels = {"provider": "anthropic", "platform": "github", "issue_type": "bug"}
    assert change.value("tamma_issues_processed_total", **labels, outcome="success") == 1
    assert (
        change.value("tamma_issue_completion_duration_seconds_sum", **labels, complexity="medium")
        == pytest.approx(60 * 60)  # a difference of two running float sums
    )


def test_an_older_observation_is_stale_and_changes_nothing(tamma, metrics):
    post(tamma, "issues", issue("succeeded", 60))
    before = metrics()
    stale = post(tamma, "issues", issue("in_progress", 30))
    assert stale.status_code == 200
    assert answer(stale) == [
        {"status": "stale", "current": {"status": "succeeded", "observed_at": at(60)}}
    ]
    assert Issue.objects.get().status == "succeeded"
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 0


def test_a_terminal_issue_never_goes_back(tamma):
    post(tamma, "issues", issue("failed", 60))
    back = post(tamma, "issues", issue("queued", 90))
    assert back.status_code == 409
    assert answer(back) == [
        {
            "status": "conflict",
            "errors": {"status": ["It is failed, which is final."]},
            "current": {"status": "failed", "observed_at": at(60)},
        }
    ]
    assert Issue.objects.get().status == "failed"


def test_at_the_same_time_the_status_further_along_wins_in_either_order(tamma):
    post(tamma, "issues", issue("in_progress", 5))
    assert answer(post(tamma, "issues", issue("awaiting_approval", 5))) == [{"status": "updated"}]
    assert answer(post(tamma, "issues", issue("in_progress", 5))) == [
        {"status": "stale", "current": {"status": "awaiting_approval", "observed_at": at(5)}}
    ]
    tie = post(tamma, "issues", issue("awaiting_approval", 5, priority="high"))
    assert tie.status_code == 409
    assert answer(tie)[0]["errors"] == {
        "priority": ["Another observation at the same observed_at holds a different value."]
    }


def test_active_statuses_move_freely_by_time(tamma):
    for minutes, status in ((1, "in_progress"), (2, "awaiting_approval"), (3, "in_progress")):
        post(tamma, "issues", issue(status, minutes))
    assert post(tamma, "issues", issue("queued", 4)).status_code == 200
    assert Issue.objects.get().status == "queued"


def test_a_counted_field_does_not_change(tamma):
    post(tamma, "issues", issue("in_progress", 1))
    post(tamma, "pull-requests", pr())
    changed = post(tamma, "issues", issue("in_progress", 20, provider="openai"))
    assert changed.status_code == 409
    assert answer(changed)[0]["errors"] == {
        "provider": ["Already counted as anthropic; it no longer changes."]
    }
    # Without a pull request, nothing has counted the provider yet.
    post(tamma, "issues", issue("in_progress", 1, external_id="43"))
    assert post(tamma, "issues", issue("in_progress", 2, external_id="43", provider="openai"))
    assert Issue.objects.get(external_id="43").provider == "openai"


def test_a_pull_request_is_opened_merged_and_counted_once(tamma, metrics):
    post(tamma, "issues", issue("in_progress", 1))
    before = metrics()
    assert post(tamma, "pull-requests", pr()).status_code == 201
    assert post(tamma, "pull-requests", pr("closed", 20)).status_code == 200
    assert post(tamma, "pull-requests", pr("open", 25)).status_code == 200
    merged = post(tamma, "pull-requests", pr("merged", 30, merge_strategy="rebase"))
    assert answer(merged) == [{"status": "updated"}]
    assert answer(post(tamma, "pull-requests", pr("merged", 30, merge_strategy="rebase"))) == [
        {"status": "unchanged"}
    ]
    reopen = post(tamma, "pull-requests", pr("open", 40))
    assert answer(reopen)[0]["errors"] == {"status": ["It is merged, which is final."]}
    row = PullRequest.objects.get()
    assert (row.status, row.merged_at, row.issue.external_id) == (
        "merged",
        T0 + timedelta(minutes=30),
        "42",
    )
    change = delta(metrics(), before)
    labels = {"provider": "anthropic", "platform": "github", "issue_type": "bug"}
    assert change.value("tamma_prs_created_total", **labels, actor="system") == 1
    assert change.value("tamma_prs_merged_total", **labels, merge_strategy="rebase") == 1


def test_an_item_naming_a_missing_issue_is_not_found(tamma):
    missing = post(tamma, "pull-requests", pr())
    assert missing.status_code == 404
    assert answer(missing) == [
        {
            "status": "not_found",
            "errors": {
                "issue_external_id": [
                    "No issue 42 in github acme/shop: send it to POST /api/v1/issues first, "
                    "then this item again."
                ]
            },
        }
    ]
    assert PullRequest.objects.count() == 0
    post(tamma, "issues", issue())
    assert post(tamma, "pull-requests", pr()).status_code == 201


def test_an_approval_waits_then_is_decided_once(tamma, metrics):
    post(tamma, "issues", issue("awaiting_approval", 5))
    before = metrics()
    assert post(tamma, "approvals", approval()).status_code == 201
    pending = metrics()
    assert (
        delta(pending, before).value(
            "tamma_pending_approvals", approval_type="plan", priority="medium"
        )
        == 1
    )
    decided = post(tamma, "approvals", approval("approved", 35))
    assert answer(decided) == [{"status": "updated"}]
    assert answer(post(tamma, "approvals", approval("rejected", 40)))[0]["errors"] == {
        "status": ["It is approved, which is final."]
    }
    row = Approval.objects.get()
    assert (row.external_id, row.status, row.decided_at) == (
        "plan-1",
        "approved",
        T0 + timedelta(minutes=35),
    )
    change = delta(metrics(), before)
    assert change.value(
        "tamma_approval_wait_duration_seconds_sum", approval_type="plan", outcome="approved"
    ) == pytest.approx(30 * 60)
    assert (
        change.value(
            "tamma_approval_wait_duration_seconds_count", approval_type="plan", outcome="approved"
        )
        == 1
    )
    assert change.value("tamma_pending_approvals", approval_type="plan", priority="medium") == 0


def test_an_escalation_is_raised_once_and_does_not_change(tamma, metrics):
    before = metrics()
    assert post(tamma, "escalations", ESCALATION).status_code == 201
    assert answer(post(tamma, "escalations", ESCALATION)) == [{"status": "unchanged"}]
    later = post(tamma, "escalations", {**ESCALATION, "severity": "low", "observed_at": at(9)})
    assert later.status_code == 409
    assert answer(later)[0]["errors"] == {
        "severity": ["Already counted as high; it no longer changes."]
    }
    labels = {
        "escalation_type": "blocked",
        "severity": "high",
        "component": "git",
        "reason": "no_access",
    }
    assert delta(metrics(), before).value("tamma_escalations_total", **labels) == 1
    row = Escalation.objects.get()
    assert (row.external_id, row.issue, row.created_at) == (
        "esc-1",
        None,
        T0 + timedelta(minutes=3),
    )


def test_a_busy_database_does_not_change_how_an_item_is_stored(tamma):
    """Rows are judged patiently: with the recording path's breaker open (the database was
    slow a moment ago), a new free-form value is still admitted, not folded, so the same
    item sent again is unchanged instead of a conflict."""
    with pytest.raises(budget.BudgetExhausted), budget.time_limited(0.0) as before_query:
        before_query()
    assert budget.failed_recently()
    item = {**ESCALATION, "external_id": "esc-busy", "reason": "flaky_network"}
    assert answer(post(tamma, "escalations", item)) == [{"status": "created"}]
    assert Escalation.objects.get(external_id="esc-busy").reason == "flaky_network"
    assert answer(post(tamma, "escalations", item)) == [{"status": "unchanged"}]


def test_a_busy_database_does_not_send_a_transition_to_overflow(tamma, metrics):
    """The counter of a row's transition carries the row's labels: its new label set is
    admitted patiently too, not sent to the overflow series because the database was slow
    a moment ago."""
    before = metrics()
    with pytest.raises(budget.BudgetExhausted), budget.time_limited(0.0) as before_query:
        before_query()
    assert budget.failed_recently()
    item = issue("succeeded", 30, external_id="busy-1", provider="mistral", issue_type="chore")
    assert answer(post(tamma, "issues", item)) == [{"status": "created"}]
    change = delta(metrics(), before)
    labels = {"provider": "mistral", "platform": "github", "issue_type": "chore"}
    assert change.value("tamma_issues_processed_total", **labels, outcome="success") == 1
    # (The middleware's own timing of this request may overflow: it is an event, not a row.)
    for family in ("issues_processed_total", "issue_completion_duration_seconds"):
        assert change.value("tamma_metrics_label_overflow_total", family=family) == 0


def test_an_escalation_may_name_its_issue(tamma):
    post(tamma, "issues", issue())
    ref = {"platform": "github", "repository": "acme/shop", "issue_external_id": "42"}
    assert post(tamma, "escalations", {**ESCALATION, **ref}).status_code == 201
    assert Escalation.objects.get().issue == Issue.objects.get()
    partial = post(
        tamma, "escalations", {**ESCALATION, "external_id": "esc-2", "platform": "github"}
    )
    assert partial.status_code == 400
    assert answer(partial)[0]["errors"] == {
        "issue_external_id": ["Name the issue by platform, repository and issue_external_id."],
        "repository": ["Name the issue by platform, repository and issue_external_id."],
    }


def test_heartbeats_keep_a_loop_active(tamma, metrics, settings):
    now = timezone.now()
    beat = {**LOOP, "observed_at": now.isoformat()}
    assert post(tamma, "loops/heartbeat", beat).status_code == 201
    samples = metrics()
    assert (
        samples.value(
            "tamma_active_autonomous_loops", mode="orchestrator", environment="production"
        )
        == 1
    )
    newer = {**beat, "observed_at": (now + timedelta(seconds=30)).isoformat()}
    assert answer(post(tamma, "loops/heartbeat", newer)) == [{"status": "unchanged"}]
    assert AutonomousLoop.objects.get().last_heartbeat == now + timedelta(seconds=30)
    assert answer(post(tamma, "loops/heartbeat", beat))[0]["status"] == "stale"
    stopped = {
        **newer,
        "status": "stopped",
        "observed_at": (now + timedelta(seconds=60)).isoformat(),
    }
    assert answer(post(tamma, "loops/heartbeat", stopped)) == [{"status": "updated"}]
    assert (
        metrics().value(
            "tamma_active_autonomous_loops", mode="orchestrator", environment="production"
        )
        == 0
    )
    old = {**LOOP, "name": "old", "observed_at": (now - timedelta(hours=1)).isoformat()}
    post(tamma, "loops/heartbeat", old)  # running, but its heartbeat is past the TTL
    assert (
        metrics().value(
            "tamma_active_autonomous_loops", mode="orchestrator", environment="production"
        )
        == 0
    )


def test_a_batch_answers_each_item_in_order(tamma):
    post(tamma, "issues", issue("in_progress", 10, external_id="41"))
    body = {
        "items": [
            issue(external_id="40"),
            issue("queued", 5, external_id="41"),
            {**issue(external_id="39"), "status": "done"},
            issue("in_progress", 20, external_id="41"),
        ]
    }
    response = post(tamma, "issues", body)
    assert response.status_code == 200
    assert [(r["index"], r["status"]) for r in response.json()["results"]] == [
        (0, "created"),
        (1, "stale"),
        (2, "rejected"),
        (3, "unchanged"),
    ]
    assert response.json()["results"][2]["errors"] == {"status": ['"done" is not a valid choice.']}
    assert {k: response.json()[k] for k in ("created", "stale", "rejected", "unchanged")} == {
        "created": 1,
        "stale": 1,
        "rejected": 1,
        "unchanged": 1,
    }
    assert sorted(Issue.objects.values_list("external_id", flat=True)) == ["40", "41"]


@pytest.mark.parametrize(
    ("items", "code"),
    [
        ([{"platform": "github"}, {"status": "x"}], 400),
        ([pr(number=1), pr(number=2)], 404),
    ],
)
def test_a_batch_with_nothing_accepted_answers_what_its_items_share(tamma, items, code):
    path = "pull-requests" if "number" in items[0] else "issues"
    assert post(tamma, path, {"items": items}).status_code == code


# -- labels -----------------------------------------------------------------------


def test_unknown_label_values_are_stored_as_the_counter_records_them(tamma, metrics):
    before = metrics()
    response = post(tamma, "issues", issue("succeeded", 30, provider="DeepSeek", issue_type="Bug"))
    assert answer(response) == [
        {
            "status": "created",
            "folded": [
                {"family": "issues_processed_total", "label": "provider", "recorded_as": "other"}
            ],
        }
    ]
    row = Issue.objects.get()
    assert (row.provider, row.issue_type) == ("other", "bug")
    change = delta(metrics(), before)
    assert (
        change.value(
            "tamma_issues_processed_total",
            provider="other",
            platform="github",
            issue_type="bug",
            outcome="success",
        )
        == 1
    )
    assert (
        change.value(
            "tamma_metrics_label_folds_total", family="issues_processed_total", label="provider"
        )
        == 1
    )
    # A retry folds the same way and counts nothing more.
    again = post(tamma, "issues", issue("succeeded", 30, provider="DeepSeek", issue_type="Bug"))
    assert answer(again)[0]["status"] == "unchanged"
    assert (
        delta(metrics(), before).value(
            "tamma_metrics_label_folds_total", family="issues_processed_total", label="provider"
        )
        == 1
    )


def test_keys_and_gauge_labels_take_only_their_values(tamma):
    response = post(tamma, "issues", issue(platform="codeberg", priority="urgent"))
    assert response.status_code == 400
    assert answer(response)[0]["errors"] == {
        "platform": ['"codeberg" is not a valid choice.'],
        "priority": ['"urgent" is not a valid choice.'],
    }


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "errors"),
    [
        (
            {k: v for k, v in issue().items() if k != "external_id"},
            {"external_id": ["This field is required."]},
        ),
        (
            {k: v for k, v in issue().items() if k != "observed_at"},
            {"observed_at": ["This field is required."]},
        ),
        ({**issue(), "title_html": "x"}, {"title_html": ["Unknown field."]}),
        ({**issue(), "external_id": 42}, {"external_id": ["Not a valid string."]}),
        (
            {**issue(), "repository": "r" * 201},
            {"repository": ["Ensure this field has no more than 200 characters."]},
        ),
        (
            {**issue(), "observed_at": "2026-12-05T10:00:00"},
            {"observed_at": ["Give the time zone (Z or +hh:mm)."]},
        ),
        (
            {**issue(), "observed_at": (timezone.now() + timedelta(hours=1)).isoformat()},
            {"observed_at": ["Must not be more than 300 seconds in the future."]},
        ),
        (
            {**issue("in_progress"), "started_at": at(-5)},
            {"started_at": ["Must not be before created_at."]},
        ),
        (
            {**issue("succeeded"), "started_at": at(10), "completed_at": at(5)},
            {"completed_at": ["Must not be before started_at."]},
        ),
    ],
)
def test_each_bad_item_is_rejected_with_its_field(tamma, item, errors):
    response = post(tamma, "issues", item)
    assert response.status_code == 400
    assert answer(response) == [{"status": "rejected", "errors": errors}]
    assert Issue.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ('{"items": []}', "The batch is empty."),
        ('{"items": [], "extra": 1}', 'A batch is {"items": [ ... ]} and nothing else.'),
        ("[1, 2]", 'Send one object or {"items": [ ... ]}.'),
        (
            "{nope",
            "JSON parse error - Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        ('{"items": ' + "[" * 40 + "]" * 40 + "}", "JSON nested deeper than 16 levels."),
    ],
)
def test_bodies_of_the_wrong_shape_get_400(tamma, body, detail):
    response = post(tamma, "issues", body)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


def test_an_item_that_is_not_an_object_is_rejected(tamma):
    response = post(tamma, "issues", {"items": [issue(), "x"]})
    assert [r["status"] for r in response.json()["results"]] == ["created", "rejected"]
    assert response.json()["results"][1]["errors"] == {"non_field_errors": ["Send an object."]}


def test_too_large_bodies_and_batches_get_413(tamma, settings):
    settings.TAMMA_METRICS = {"STATE_MAX_BATCH": 2, "INGEST_MAX_BODY_BYTES": 4000}
    three = post(tamma, "issues", {"items": [issue(external_id=str(n)) for n in range(3)]})
    assert (three.status_code, three.json()) == (413, {"detail": "At most 2 items per request."})
    big = post(tamma, "issues", issue(title="x" * 5000))
    assert (big.status_code, big.json()) == (413, {"detail": "The body exceeds 4000 bytes."})
    assert Issue.objects.count() == 0


def test_a_chunked_body_gets_411(tamma):
    response = tamma.generic(
        "POST",
        "/api/v1/issues",
        json.dumps(issue()),
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    assert response.status_code == 411
    assert Issue.objects.count() == 0


# -- who may write ------------------------------------------------------------------


def test_only_the_change_domain_permission_may_write_state(tamma):
    worker = client_of(WORKER, "worker-1")
    scraper = client_of(PROMETHEUS, "prom")
    for client in (worker, scraper):
        refused = post(client, "issues", issue())
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": "Writing state needs the tamma_metrics.change_domain permission."
        }
    assert post(Client(), "issues", issue()).status_code == 401
    bad = Client(HTTP_AUTHORIZATION="Bearer tmm_nope_nope")
    assert post(bad, "issues", issue()).status_code == 401
    assert Issue.objects.count() == 0
    assert post(tamma, "issues", issue()).status_code == 201


def test_the_orchestrator_sees_no_family_and_may_report_events(tamma):
    assert tamma.get("/metrics").status_code == 403
    event = {
        "type": "code_change",
        "change_type": "create",
        "language": "go",
        "actor": "system",
        "file_type": "go",
    }
    assert post(tamma, "events", event).status_code == 200


def test_the_state_api_is_throttled(tamma, settings):
    settings.TAMMA_METRICS = {"API_THROTTLE_RATE": "2/m"}
    codes = [post(tamma, "issues", issue(external_id=str(n))).status_code for n in range(3)]
    assert codes == [201, 201, 429]


# -- one transaction ----------------------------------------------------------------


def test_a_database_failure_writes_nothing_of_the_batch_and_answers_503(
    tamma, metrics, monkeypatch
):
    before = metrics()
    calls = []
    original = writer._create

    def fail_on_second(kind, values, issue_row, link):
        calls.append(values["external_id"])
        if len(calls) == 2:
            raise DatabaseError("disk I/O error")
        return original(kind, values, issue_row, link)

    monkeypatch.setattr(writer, "_create", fail_on_second)
    items = [issue("succeeded", 30, external_id=str(n)) for n in range(3)]
    response = post(tamma, "issues", {"items": items})
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert Issue.objects.count() == 0
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 0


def test_a_batch_that_lost_an_insert_race_runs_again(tamma, metrics, monkeypatch):
    before = metrics()
    original = writer._write
    runs = []

    def lose_first(kind, prepared):
        runs.append(1)
        result = original(kind, prepared)
        if len(runs) == 1:
            raise IntegrityError("UNIQUE constraint failed")  # after the writes: rolled back
        return result

    monkeypatch.setattr(writer, "_write", lose_first)
    response = post(tamma, "issues", issue("succeeded", 30))
    assert answer(response) == [{"status": "created"}]
    assert len(runs) == 2
    assert Issue.objects.count() == 1
    assert delta(metrics(), before).total("tamma_issues_processed_total") == 1


def test_updates_read_each_row_once(tamma):
    items = [issue(external_id=str(n)) for n in range(50)]
    post(tamma, "issues", {"items": items})
    moved = [issue("succeeded", 30, external_id=str(n)) for n in range(50)]
    with CaptureQueriesContext(connection) as queries:
        outcomes = state.apply("issues", [_validated(item) for item in moved])
    assert {o.status for o in outcomes} == {"updated"}
    updates = [q for q in queries if q["sql"].startswith("UPDATE")]
    reads = [
        q for q in queries if q["sql"].startswith("SELECT") and "tamma_metrics_issue" in q["sql"]
    ]
    # One UPDATE per row, one SELECT for all of them: no pre_save read per row.
    assert (len(updates), len(reads)) == (50, 1)


def _validated(item: dict) -> dict:
    from tamma_metrics.api.state import SERIALIZERS

    serializer = SERIALIZERS["issues"](data=item)
    assert serializer.is_valid(), serializer.errors
    return dict(serializer.validated_data)
