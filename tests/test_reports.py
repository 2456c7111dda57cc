"""Velocity, health and families reports: figures equal values computed by hand for a
fixed scenario (day boundaries, another time zone, several PRs per issue, escalations,
approvals), in a constant number of queries; the pages and the API agree, follow the
MetricFamily permissions and answer bad input with 400."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm

from tamma_metrics.models import ApiToken, MetricFamily
from tamma_metrics.reports import health, velocity
from tamma_metrics.roles import OPERATOR, PRODUCT_MANAGER, WORKER, seed_roles
from tests import factories
from tests.utils import staff_client

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(day: int, hour: float = 0.0) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC) + timedelta(hours=hour)


@pytest.fixture
def scenario(db):
    """Four issues completed in the 7-day window, one before it, one cancelled, one
    queued; PRs, approvals and escalations around them."""
    i1 = factories.issue(provider="anthropic", platform="github", issue_type="bug",
                         status="succeeded", created_at=at(25, 8), started_at=at(25, 10),
                         completed_at=at(25, 20))  # fmt: skip
    i2 = factories.issue(provider="openai", platform="gitlab", issue_type="feature",
                         status="failed", created_at=at(26), started_at=at(26, 2),
                         completed_at=at(27, 2))  # fmt: skip
    # Started late on the 28th, completed early on the 29th (UTC); created before the window.
    i3 = factories.issue(provider="anthropic", platform="github", issue_type="feature",
                         status="succeeded", created_at=at(20, 10), started_at=at(28, 23.5),
                         completed_at=at(29, 0.5))  # fmt: skip
    i4 = factories.issue(provider="anthropic", platform="github", issue_type="bug",
                         status="timed_out", created_at=at(29, 10), started_at=at(29, 11),
                         completed_at=at(30, 11))  # fmt: skip
    factories.issue(
        status="succeeded", created_at=at(10), started_at=at(11), completed_at=at(20)
    )  # fmt: skip  (before the window)
    factories.issue(status="cancelled", created_at=at(25), started_at=at(25, 1),
                    completed_at=at(26))  # fmt: skip
    factories.issue(status="queued", created_at=at(29))
    factories.pull_request(i1, created_at=at(25, 12), status="merged", merged_at=at(25, 18))
    factories.pull_request(i2, created_at=at(26, 5), status="closed")
    factories.pull_request(i2, created_at=at(26, 9), status="merged", merged_at=at(26, 23.5))
    factories.approval(i1, approval_type="code_review", requested_at=at(25, 12),
                       status="approved", decided_at=at(25, 14))  # fmt: skip
    factories.approval(i2, approval_type="code_review", requested_at=at(26, 6),
                       status="rejected", decided_at=at(26, 12))  # fmt: skip
    factories.approval(i4, approval_type="merge", requested_at=at(29, 12),
                       status="approved", decided_at=at(30))  # fmt: skip
    factories.approval(i4, approval_type="deployment", requested_at=at(27))  # pending
    factories.escalation(issue=i2, severity="high", reason="flaky_tests", created_at=at(26, 6))
    factories.escalation(severity="critical", reason="budget_exceeded", created_at=at(28, 9))
    factories.escalation(severity="low", reason="old", created_at=at(20))  # before the window
    return i1, i2, i3, i4


def test_velocity_figures_equal_hand_computed_values(scenario):
    report = velocity.velocity(velocity.Filters(days=7), now=NOW)
    assert report["window"]["since"] == "2026-11-24T00:00:00+00:00"
    assert report["totals"] == {
        "completed": 4,
        "succeeded": 2,
        "success_rate": 0.5,
        "prs_opened": 3,
        "prs_merged": 2,
    }
    per_day = {row["day"]: row for row in report["completed_per_day"]}
    assert len(per_day) == 7 and min(per_day) == "2026-11-24" and max(per_day) == "2026-11-30"
    assert per_day["2026-11-25"] == {"day": "2026-11-25", "success": 1, "failure": 0, "timeout": 0}
    assert per_day["2026-11-27"]["failure"] == 1
    assert per_day["2026-11-29"]["success"] == 1  # completed at 00:30 on the 29th
    assert per_day["2026-11-30"]["timeout"] == 1
    assert sum(sum(v for k, v in row.items() if k != "day") for row in per_day.values()) == 4
    assert report["throughput_per_week"] == [
        # The week holds today: not over, so partial.
        {"week_start": "2026-11-24", "days": 7, "completed": 4, "succeeded": 2, "partial": True}
    ]
    # Cycle hours 10, 24, 1, 24 -> sorted 1, 10, 24, 24: p50 rank 2, p95 rank 4.
    assert report["cycle_time_hours"] == [
        {"week_start": "2026-11-24", "median": 10.0, "p95": 24.0, "count": 4}
    ]
    # Lead hours 12, 26, 206.5, 25 -> 12, 25, 26, 206.5.
    assert report["lead_time_hours"] == [
        {"week_start": "2026-11-24", "median": 25.0, "p95": 206.5, "count": 4}
    ]
    prs = {row["day"]: row for row in report["pull_requests_per_day"]}
    assert prs["2026-11-25"] == {"day": "2026-11-25", "opened": 1, "merged": 1}
    assert prs["2026-11-26"] == {"day": "2026-11-26", "opened": 2, "merged": 1}
    assert report["time_to_merge_hours"] == {"median": 6.0, "p95": 14.5, "count": 2}
    assert report["first_time_merge"] == {"issues_with_prs": 2, "first_pr_merged": 1, "rate": 0.5}
    assert report["autonomy"] == {"finished": 4, "without_escalation": 3, "rate": 0.75}
    assert report["approval_wait_hours"] == [
        {"approval_type": "plan", "median": None, "p95": None, "count": 0},
        {"approval_type": "code_review", "median": 2.0, "p95": 6.0, "count": 2},
        {"approval_type": "merge", "median": 12.0, "p95": 12.0, "count": 1},
        {"approval_type": "deployment", "median": None, "p95": None, "count": 0},
    ]
    assert report["escalations"] == [
        {"severity": "critical", "reason": "budget_exceeded", "count": 1},
        {"severity": "high", "reason": "flaky_tests", "count": 1},
    ]
    assert report["providers"] == [
        {"provider": "anthropic", "issues": 3, "success_rate": 0.6667, "median_cycle_hours": 10.0},
        {"provider": "openai", "issues": 1, "success_rate": 0.0, "median_cycle_hours": 24.0},
    ]


def test_filters_narrow_every_figure(scenario):
    report = velocity.velocity(velocity.Filters(days=7, provider="anthropic"), now=NOW)
    assert report["totals"]["completed"] == 3
    assert (report["totals"]["prs_opened"], report["totals"]["prs_merged"]) == (1, 1)
    assert report["escalations"] == []  # one is openai's, one has no issue
    assert report["autonomy"] == {"finished": 3, "without_escalation": 3, "rate": 1.0}
    assert report["first_time_merge"]["rate"] == 1.0
    assert [row["provider"] for row in report["providers"]] == ["anthropic"]
    gitlab = velocity.velocity(velocity.Filters(days=7, platform="gitlab"), now=NOW)
    assert gitlab["totals"]["completed"] == 1 and gitlab["totals"]["succeeded"] == 0


def test_days_follow_the_site_time_zone(scenario):
    with timezone.override("America/New_York"):
        report = velocity.velocity(velocity.Filters(days=7), now=NOW)
    assert report["window"]["since"] == "2026-11-24T00:00:00-05:00"
    per_day = {row["day"]: row for row in report["completed_per_day"]}
    # 02:00 UTC on the 27th is 21:00 on the 26th in New York; 00:30 UTC on the 29th is
    # 19:30 on the 28th.
    assert per_day["2026-11-26"]["failure"] == 1 and per_day["2026-11-27"]["failure"] == 0
    assert per_day["2026-11-28"]["success"] == 1 and per_day["2026-11-29"]["success"] == 0


def test_the_number_of_queries_does_not_grow_with_the_data(scenario):
    def queries() -> int:
        with CaptureQueriesContext(connection) as run:
            velocity.velocity(velocity.Filters(days=30), now=NOW)
        return len(run.captured_queries)

    few = queries()
    for n in range(60):
        provider = ["openai", "google"][n % 2]
        issue = factories.issue(status="succeeded", created_at=at(20), started_at=at(21),
                                completed_at=at(22 + n % 8), provider=provider)  # fmt: skip
        factories.pull_request(issue, created_at=at(21, 5), status="merged", merged_at=at(22))
        factories.escalation(issue=issue, reason=f"r{n % 7}", created_at=at(23))
    assert queries() == few == 11


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"days": "8"}, "days"),
        ({"days": "thirty"}, "days"),
        ({"provider": "nobody"}, "provider"),
        ({"platform": "GitHub"}, "platform"),
        ({"issue_type": "\x00"}, "issue_type"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_filters_name_the_parameter(params, field):
    with pytest.raises(velocity.FilterError) as raised:
        velocity.Filters.parse(params)
    assert raised.value.field == field


# -- health -------------------------------------------------------------------------


def test_health_states_its_rules_and_figures(scenario, settings):
    settings.TAMMA_METRICS = {"HEALTH_QUEUE_DEPTH_DEGRADED": 1}
    factories.loop(status="running", last_heartbeat=NOW)
    report = health.health(now=NOW)
    assert report["database_up"] is True
    assert report["status"] == health.CRITICAL  # the pending deployment approval is old
    reasons = [reason["reason"] for reason in report["reasons"]]
    assert "a deployment approval has waited more than 24 h" in reasons
    assert "1 issues queued" in reasons
    # A caller who may not see the queue reads no figure of it.
    seen = health.restricted(report, {"pending_approvals"})
    assert [r["reason"] for r in seen["reasons"]].count(health.HIDDEN_REASON) == 1
    assert "1 issues queued" not in json.dumps(seen)
    approvals = {row["approval_type"]: row for row in report["approvals"]}
    assert approvals["deployment"]["pending"] == 1
    # Requested at midnight on the 27th, read at noon on the 30th: 3.5 days.
    assert approvals["deployment"]["oldest_age_seconds"] == 3.5 * 86_400
    assert sum(row["queued"] for row in report["queue_depth"]) == 1
    assert sum(row["active"] for row in report["active_loops"]) == 1


def test_health_is_healthy_degraded_or_critical_by_the_stated_rules(db, settings):
    settings.TAMMA_METRICS = {"HEALTH_ESCALATIONS_PER_HOUR_DEGRADED": 2}
    factories.loop(status="running", last_heartbeat=timezone.now())
    assert (health.health()["status"], health.health()["reasons"]) == (health.HEALTHY, [])
    factories.escalation()
    factories.escalation()
    assert health.health()["reasons"] == [
        {"about": "escalations_total", "reason": "2 escalations in the last hour"}
    ]
    assert health.health()["status"] == health.DEGRADED
    with mock.patch.object(health, "_database", side_effect=health.DatabaseError("down")):
        report = health.health()
    assert (report["status"], report["database_up"]) == (health.CRITICAL, False)
    assert "active_loops" not in report


# -- the API and the pages ---------------------------------------------------------


def token_of(username: str, role: str | None) -> str:
    from django.contrib.auth.models import User

    user = User.objects.create_user(username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return ApiToken.create_for(user, "t")[1]


def api(path: str, token: str, **params: str):
    return Client().get(path, params, HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def roles(db):
    seed_roles()


def test_the_api_serves_the_report_to_who_may_see_it(scenario, roles):
    pm = token_of("pm", PRODUCT_MANAGER)
    with mock.patch.object(timezone, "now", return_value=NOW):
        answer = api("/api/v1/velocity", pm, days="7")
        expected = velocity.velocity(velocity.Filters(days=7), now=NOW)
    assert answer.status_code == 200, answer.content
    assert answer.json() == json.loads(json.dumps(expected))
    worker = token_of("worker", WORKER)
    assert api("/api/v1/velocity", worker).status_code == 403
    assert api("/api/v1/health", worker).status_code == 403
    # The product manager sees the business parts of health only.
    seen = api("/api/v1/health", pm).json()
    assert "approvals" in seen and "recent_escalations" in seen
    assert not {"queue_depth", "active_loops", "metrics_layer", "database_up"} & set(seen)
    everything = api("/api/v1/health", token_of("op", OPERATOR)).json()
    assert {"queue_depth", "active_loops", "metrics_layer", "approvals"} <= set(everything)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"days": "8"}, "days"), ({"provider": "x"}, "provider"), ({"foo": "1"}, "foo")],
)
def test_the_api_answers_bad_filters_with_400_naming_them(roles, params, field):
    answer = api("/api/v1/velocity", token_of("pm", PRODUCT_MANAGER), **params)
    assert answer.status_code == 400
    assert list(answer.json()) == [field]


def test_the_pages_show_what_the_api_serves(scenario, roles):
    pm = staff_client("pm-page", PRODUCT_MANAGER)
    with mock.patch.object(timezone, "now", return_value=NOW):
        page = pm.get("/reports/velocity/", {"days": "7"})
        expected = velocity.velocity(velocity.Filters(days=7), now=NOW)
    assert page.status_code == 200
    assert page.context["report"] == expected
    body = page.content.decode()
    assert body.count('class="tamma-chart"') == 5 and "<polyline" in body and "<rect" in body
    assert 'id="kpi-completed"><div>Issues completed</div><div class="value">4<' in body
    assert "Tamma metrics" in body  # the branded admin
    health_page = pm.get("/reports/health/")
    assert health_page.status_code == 200
    assert 'id="queue"' not in health_page.content.decode()  # not a business family
    # What the status covers, and where the service's own liveness is.
    assert f'<p id="covers">This status covers {health.COVERS}</p>' in (
        health_page.content.decode().replace("&#x27;", "'")
    )
    assert "/metrics/health, which says ok or unavailable" in health.COVERS
    bad = pm.get("/reports/velocity/", {"days": "8"})
    assert bad.status_code == 400
    assert "days must be one of 7, 30, 90" in bad.content.decode()


def test_pages_need_staff_and_the_families_they_show(scenario, roles):
    assert Client().get("/reports/velocity/").status_code == 302  # to the admin login
    blind = staff_client("blind", None)
    assert blind.get("/reports/velocity/").status_code == 403
    assert blind.get("/reports/health/").status_code == 403
    assert blind.get("/reports/families/").status_code == 403
    # A role that sees the queue only: health shows that part, velocity stays closed.
    queue_role = Group.objects.create(name="queue-watchers")
    assign_perm("view_metricfamily", queue_role, MetricFamily.objects.get(name="queue_depth"))
    watcher = staff_client("queue-watcher", "queue-watchers")
    assert watcher.get("/reports/velocity/").status_code == 403
    page = watcher.get("/reports/health/")
    assert page.status_code == 200
    assert set(page.context["report"]) & set(health.SECTIONS) == {"queue_depth"}


def test_the_families_page_lists_series_roles_and_caps(scenario, roles, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="x")
    client = Client()
    client.force_login(admin)
    page = client.get("/reports/families/")
    assert page.status_code == 200
    rows = {row["name"]: row for row in page.context["families"]}
    assert rows["issues_processed_total"]["roles"] == ["operator", "product-manager", "prometheus"]
    assert rows["issues_processed_total"]["series_cap"] == 1000
    assert rows["queue_depth"]["series"] is None  # computed, not recorded
    assert (
        "label__in=provider,platform,issue_type,outcome"
        in rows["issues_processed_total"]["policy_url"]
    )


def test_the_landing_page_links_everything(client):
    page = Client().get("/")
    assert page.status_code == 200
    body = page.content.decode()
    for link in (
        "/reports/velocity/",
        "/reports/delivery/",
        "/reports/health/",
        "/admin/",
        "/metrics",
        "/api/docs",
    ):
        assert f'href="{link}"' in body


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "–"), (0, "0 s"), (40, "40 s"), (59.4, "59 s"), (59.6, "1 min"), (60, "1 min"),
     (125, "2 min"), (2_700, "45 min"), (3_569, "59 min"), (3_590, "1 h"), (7_500, "2.1 h"),
     (38_984.4, "10.8 h"), (86_400, "24 h"), (172_619, "47.9 h"), (172_800, "2 d"),
     (276_480, "3.2 d"), (2_223_073, "25.7 d"), (-5, "0 s")],
)  # fmt: skip
def test_durations_read_as_people_read_them(seconds, shown):
    """One unit chosen by size, at most one decimal, never "10.829 h"."""
    from tamma_metrics.pages import duration

    assert duration(seconds) == shown


def test_the_velocity_page_shows_durations_in_words_and_the_partial_week(scenario, roles):
    pm = staff_client("pm-words", PRODUCT_MANAGER)
    with mock.patch.object(timezone, "now", return_value=NOW):
        week = pm.get("/reports/velocity/", {"days": "7"})
        month = pm.get("/reports/velocity/", {"days": "30"})
    body = week.content.decode()
    # Time to merge 6 and 14.5 hours; cycle 10 and 24 hours, lead 25 and 206.5 hours.
    assert '<div class="value">6 h</div><div>p95 14.5 h, 2 merged</div>' in body
    cells = "<td>10 h</td><td>24 h</td><td>25 h</td><td>8.6 d</td>"  # cycle, lead: p50, p95
    assert f"<td>2026-11-24</td><td>4</td>{cells}" in body
    assert "<td>code_review</td><td>2</td><td>2 h</td><td>6 h</td>" in body
    assert "<td>anthropic</td><td>3</td><td>66.7%</td><td>10 h</td>" in body
    assert "Cycle p95: 24 h</title>" in body and "Lead p95: 8.6 d</title>" in body
    cycle = week.context["charts"][2]["svg"]
    assert ">days</text>" in cycle  # the axis unit of the largest, 206.5 hours
    assert "10.0" not in body and " h</th>" not in body

    # 30 days from 1 November: four whole weeks and the 29th-30th, today so far.
    weeks = month.context["report"]["throughput_per_week"]
    assert [(row["week_start"], row["days"], row["partial"]) for row in weeks] == [
        ("2026-11-01", 7, False), ("2026-11-08", 7, False), ("2026-11-15", 7, False),
        ("2026-11-22", 7, False), ("2026-11-29", 2, True),
    ]  # fmt: skip
    throughput = month.context["charts"][1]
    assert throughput["id"] == "throughput"
    assert [row[-1] for row in throughput["rows"]] == ["whole"] * 4 + [
        "partial: 1 day and today so far"
    ]
    svg = throughput["svg"]
    assert svg.count('class="tamma-partial"') == 1  # the label over the last bar
    assert "Partial week: 1 day and today so far</text>" in svg  # in the legend
    bars = [part for part in svg.split("<rect")[1:] if "<title>" in part]
    # The first two weeks have none: bars for the 15th, the 22nd and the partial 29th.
    assert [("stroke-dasharray" in bar) for bar in bars] == [False, False, True]
    assert "11-29 Completed: 2 (Partial week: 1 day and today so far)</title>" in svg


def test_a_daylight_saving_change_inside_the_window_keeps_days_local(db):
    """New York leaves daylight-saving time at 06:00 UTC on 1 November 2026 (02:00 EDT
    becomes 01:00 EST): the offset changes inside a 30-day window ending 30 November."""
    for completed in (at(1, 5.5), at(2, 4.5), at(2, 5.5)):
        factories.issue(status="succeeded", created_at=at(1) - timedelta(days=2),
                        started_at=at(1) - timedelta(days=1), completed_at=completed)  # fmt: skip
    factories.issue(
        status="succeeded",
        created_at=at(1) - timedelta(days=3),
        started_at=at(1) - timedelta(days=2),
        completed_at=at(1) - timedelta(hours=20.01),
    )  # fmt: skip  23:59 EDT, 30 Oct
    with timezone.override("America/New_York"):
        report = velocity.velocity(velocity.Filters(days=30), now=NOW)
    per_day = {row["day"]: row["success"] for row in report["completed_per_day"]}
    # 01:30 EDT and 23:30 EST on the 1st; 00:30 EST on the 2nd; the 30 October one is out.
    assert (per_day["2026-11-01"], per_day["2026-11-02"]) == (2, 1)
    assert report["totals"]["completed"] == 3
