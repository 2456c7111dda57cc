"""The reports as a product manager reads them, in headless Chromium: the velocity KPIs
equal counts taken from the database with the ORM (not from the report module), every
chart is drawn with data marks, a filter chosen in the form narrows the figures, health
shows the pending approvals and no operations-only section, and the admin pages for API
tokens and family permissions stay closed."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from datetime import datetime, time, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from tamma_metrics.models import (
    Approval,
    Escalation,
    Issue,
    MetricFamily,
    PullRequest,
)
from tamma_metrics.roles import PRODUCT_MANAGER, seed_roles
from tests import factories
from tests.browser.test_admin_in_chromium import CHROMIUM_ARGS

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("chromium"),  # fails in CI when missing, never skips there
]

DONE = [Issue.Status.SUCCEEDED, Issue.Status.FAILED, Issue.Status.TIMED_OUT]
# A data mark: a bar (its rect carries a <title>, legend swatches do not), a point or a line.
DATA_MARKS = "rect:has(> title), circle, polyline"


@pytest.fixture
def page(live_server):
    # Playwright's sync API runs an event loop in this thread; Django's ORM then refuses
    # to run here unless told this test is not async code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(15_000)
            yield page
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def seed(now: datetime) -> None:
    """Issues completed on different days of the last 30 (and some that must not count),
    pull requests, approvals, escalations and a running loop."""

    def ago(days: float, hours: float = 0) -> datetime:
        return now - timedelta(days=days, hours=hours)

    def done(provider: str, status: str, days: float, **fields) -> Issue:
        return factories.issue(provider=provider, status=status, created_at=ago(days + 3),
                               started_at=ago(days + 1), completed_at=ago(days),
                               **fields)  # fmt: skip

    a1 = done("anthropic", "succeeded", 2)
    a2 = done("anthropic", "succeeded", 5, issue_type="feature")
    a3 = done("anthropic", "failed", 9, platform="gitlab")
    done("anthropic", "timed_out", 15)  # no pull request
    o1 = done("openai", "succeeded", 1, issue_type="feature")
    o2 = done("openai", "failed", 12, platform="gitlab")
    o3 = done("openai", "succeeded", 20)
    done("google", "succeeded", 7)
    old = done("anthropic", "succeeded", 45)  # before the window
    # Cancelled in the window: not completed.
    factories.issue(provider="openai", status="cancelled", created_at=ago(6),
                    started_at=ago(5), completed_at=ago(4))  # fmt: skip
    queued = factories.issue(provider="anthropic", status="queued", created_at=ago(0, 3))
    working = factories.issue(provider="openai", status="in_progress", created_at=ago(3),
                              started_at=ago(2))  # fmt: skip

    pr = factories.pull_request
    pr(a1, created_at=ago(2, 20), status="merged", merged_at=ago(2, 10))
    pr(a2, created_at=ago(6), status="closed")  # first PR not merged
    pr(a2, created_at=ago(5, 20), status="merged", merged_at=ago(5, 2))
    pr(a3, created_at=ago(9, 12), status="open")
    pr(o1, created_at=ago(1, 20), status="merged", merged_at=ago(1, 4))
    pr(o2, created_at=ago(12, 12), status="closed")
    pr(o3, created_at=ago(35), status="merged", merged_at=ago(20, 6))  # opened before the window
    pr(working, created_at=ago(1), status="open")  # opened in the window, issue not done
    pr(old, created_at=ago(46), status="merged", merged_at=ago(45, 5))  # before the window

    factories.approval(a1, approval_type="code_review", requested_at=ago(2, 20),
                       status="approved", decided_at=ago(2, 15))  # fmt: skip
    factories.approval(o1, approval_type="merge", requested_at=ago(1, 6),
                       status="approved", decided_at=ago(1, 5))  # fmt: skip
    factories.approval(a3, approval_type="plan", requested_at=ago(10),
                       status="rejected", decided_at=ago(9, 20))  # fmt: skip
    factories.approval(working, approval_type="deployment", requested_at=ago(2))  # pending > 24 h
    factories.approval(working, approval_type="code_review", requested_at=ago(0, 5))  # pending
    factories.approval(queued, approval_type="plan", requested_at=ago(0, 2))  # pending

    factories.escalation(issue=a3, severity="high", reason="flaky_tests", created_at=ago(9))
    factories.escalation(issue=o2, severity="critical", reason="budget_exceeded",
                         created_at=ago(12))  # fmt: skip
    factories.escalation(severity="low", reason="no_issue", created_at=ago(0, 2))
    factories.escalation(issue=old, reason="old", created_at=ago(45))
    factories.loop(status="running", last_heartbeat=now)


def window_start(days: int) -> datetime:
    """Midnight (site time) of the first of the last ``days`` calendar days."""
    first = timezone.localdate() - timedelta(days=days - 1)
    return timezone.make_aware(datetime.combine(first, time.min))


def counted(days: int = 30, provider: str = "") -> dict[str, object]:
    """The velocity KPIs, counted here from the rows."""
    since, now = window_start(days), timezone.now()
    issues = Issue.objects.filter(status__in=DONE, completed_at__gte=since, completed_at__lte=now)
    prs = PullRequest.objects.all()
    if provider:
        issues, prs = issues.filter(provider=provider), prs.filter(issue__provider=provider)
    completed = list(issues)
    escalated = set(Escalation.objects.exclude(issue=None).values_list("issue_id", flat=True))
    with_prs = first_merged = 0
    for issue in completed:
        first = issue.pull_requests.order_by("created_at", "pk").first()
        if first is not None:
            with_prs += 1
            first_merged += first.status == PullRequest.Status.MERGED
    by_provider: dict[str, int] = {}
    for issue in completed:
        by_provider[issue.provider] = by_provider.get(issue.provider, 0) + 1
    return {
        "completed": len(completed),
        "succeeded": sum(issue.status == Issue.Status.SUCCEEDED for issue in completed),
        "prs_opened": prs.filter(created_at__gte=since, created_at__lte=now).count(),
        "prs_merged": prs.filter(
            status=PullRequest.Status.MERGED, merged_at__gte=since, merged_at__lte=now
        ).count(),
        "finished": len(completed),
        "autonomous": sum(issue.pk not in escalated for issue in completed),
        "with_prs": with_prs,
        "first_merged": first_merged,
        "providers": by_provider,
    }


def shown(page) -> dict[str, object]:
    """The velocity KPIs as the page shows them."""

    def text(selector: str) -> str:
        return page.inner_text(selector).strip()

    opened, merged = re.fullmatch(r"(\d+) / (\d+)", text("#kpi-prs .value")).groups()
    autonomous, finished = re.search(
        r"(\d+) of (\d+) without escalation", text("#kpi-autonomy")
    ).groups()
    first_merged, with_prs = re.search(
        r"(\d+) of (\d+) issues with PRs", text("#kpi-first-merge")
    ).groups()
    providers = {
        row.locator("td").nth(0).inner_text(): int(row.locator("td").nth(1).inner_text())
        for row in rows(page, "#providers")
        if row.locator("td").count() == 4
    }
    return {
        "completed": int(text("#kpi-completed .value")),
        "success": text("#kpi-success .value"),
        "prs_opened": int(opened),
        "prs_merged": int(merged),
        "finished": int(finished),
        "autonomous": int(autonomous),
        "with_prs": int(with_prs),
        "first_merged": int(first_merged),
        "providers": providers,
    }


def assert_shows(page, expected: dict[str, object]) -> None:
    seen = shown(page)
    success = seen.pop("success")
    wanted = {key: value for key, value in expected.items() if key != "succeeded"}
    assert seen == wanted
    if expected["completed"]:
        percent = 100 * expected["succeeded"] / expected["completed"]
        assert success == f"{percent:.1f}%"  # one decimal, so 62.5 % stays 62.5 %
    else:
        assert success == "–"


def assert_charts_drawn(page, expected: int) -> None:
    charts = page.locator("svg.tamma-chart")
    assert charts.count() == expected
    for index in range(expected):
        chart = charts.nth(index)
        title = chart.get_attribute("aria-label")
        box = chart.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0, title
        marks = chart.locator(DATA_MARKS)
        assert marks.count() > 0, f"{title}: axes only"
        drawn = [marks.nth(n).bounding_box() for n in range(marks.count())]
        assert any(b and b["width"] > 0 and b["height"] > 0 for b in drawn), title


def rows(page, table: str) -> list:
    return page.locator(f"{table} tbody tr").all()


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("input[type=submit]")
    assert page.url == f"{base}/admin/"


def test_a_product_manager_reads_the_reports(page, live_server):
    base = live_server.url
    seed_roles()
    seed(timezone.now())
    pm = User.objects.create_user("pm", password="pm-pass-1234", is_staff=True)
    pm.groups.add(Group.objects.get(name=PRODUCT_MANAGER))
    # Script errors, and stylesheets or scripts that fail to load (the 403 documents
    # below and the demo's missing favicon are expected).
    errors: list[str] = []

    def failed_resource(answer) -> None:
        expected = answer.request.resource_type == "document" or answer.url.endswith("favicon.ico")
        if answer.status >= 400 and not expected:
            errors.append(f"{answer.status} {answer.url}")

    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", failed_resource)

    log_in(page, base, "pm", "pm-pass-1234")

    # Velocity over 30 days: the KPIs are the database's counts, every chart has marks.
    response = page.goto(f"{base}/reports/velocity/?days=30")
    assert response.status == 200
    everything = counted(30)
    assert everything["completed"] == 8 and everything["prs_opened"] == 7  # the seed is rich
    assert_shows(page, everything)
    assert_charts_drawn(page, 5)
    assert page.locator("div.tamma-figure[id^=chart-] svg.tamma-chart").count() == 5
    # The last week (yesterday and today, so far) is marked partial, on the chart and in
    # the table; durations read in one unit, never with three decimals.
    label = page.locator("#chart-throughput svg text.tamma-partial")
    assert label.count() == 1 and label.text_content() == "partial"
    assert label.bounding_box()["height"] > 0
    last_week = page.locator("#chart-throughput tbody tr").last.inner_text()
    assert last_week.endswith("partial: 1 day and today so far"), last_week
    assert not re.search(r"\d\.\d\d+ h\b", page.inner_text("#content-main"))
    escalations = Counter(
        (e.severity, e.reason) for e in Escalation.objects.filter(created_at__gte=window_start(30))
    )
    assert len(escalations) == 3
    assert {
        tuple(cell.inner_text() for cell in row.locator("td").all())
        for row in rows(page, "#escalations")
    } == {(severity, reason, str(n)) for (severity, reason), n in escalations.items()}

    # Narrow to one provider in the form: the figures follow.
    page.select_option("select[name=provider]", "openai")
    with page.expect_navigation():
        page.click("form.tamma-filters input[type=submit]")
    assert "provider=openai" in page.url and "days=30" in page.url
    assert page.locator("select[name=provider]").input_value() == "openai"
    assert page.locator("select[name=days]").input_value() == "30"
    openai = counted(30, provider="openai")
    assert openai["completed"] != everything["completed"]
    assert openai["prs_opened"] != everything["prs_opened"]
    assert_shows(page, openai)

    # Health: a status, the pending approvals from the database, no operations parts.
    response = page.goto(f"{base}/reports/health/")
    assert response.status == 200
    status = page.inner_text("#status").strip()
    assert status in {"System healthy", "System degraded", "System critical"}
    # A deployment approval has been pending for two days (> 24 h): the critical rule.
    assert status == "System critical"
    assert "a deployment approval has waited more than 24 h" in page.inner_text("#reasons")
    pending = {
        row.locator("td").nth(0).inner_text(): int(row.locator("td").nth(1).inner_text())
        for row in rows(page, "#approvals")
    }
    in_database = dict.fromkeys(Approval.ApprovalType.values, 0)
    for approval in Approval.objects.filter(status=Approval.Status.PENDING):
        in_database[approval.approval_type] += 1
    assert pending == in_database
    assert sum(pending.values()) == 3
    assert page.locator("#recent-escalations tbody tr").count() == 1  # the last 24 hours
    for operations_only in ("#queue", "#loops", "#metrics-layer"):
        assert page.locator(operations_only).count() == 0, operations_only
    assert_charts_drawn(page, 1)
    assert page.locator("#chart-approvals svg.tamma-chart").count() == 1

    # The admin pages for tokens and family permissions are closed to a product manager.
    family = MetricFamily.objects.get(name="issues_processed_total")
    role = Group.objects.get(name=PRODUCT_MANAGER)
    closed = [
        "/admin/tamma_metrics/apitoken/",
        "/admin/tamma_metrics/apitoken/add/",
        "/admin/tamma_metrics/metricfamily/",
        f"/admin/tamma_metrics/metricfamily/{family.pk}/change/",
        f"/admin/tamma_metrics/metricfamily/{family.pk}/permissions/",
        f"/admin/tamma_metrics/metricfamily/{family.pk}/permissions/group-manage/{role.pk}/",
        "/reports/families/",
    ]
    for path in closed:
        response = page.goto(f"{base}{path}")
        assert response.status == 403, path
        assert page.locator("#changelist, #result_list, form#apitoken_form").count() == 0, path
        assert "tmm_" not in page.content(), path
    assert errors == []
