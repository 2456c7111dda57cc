"""The delivery page as a product manager reads it, in headless Chromium, over the demo's
data: the four keys, the deployments counted, the changes, their cost and the waits by
provider equal what is counted here from the rows with the ORM and Python (not with the
report module); every chart is drawn with data marks; the bands are stated."""

from __future__ import annotations

import io
import re
from collections import defaultdict
from datetime import datetime, time, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.utils import timezone

from tamma_metrics.models import Deployment, Issue, PullRequest
from tamma_metrics.roles import PRODUCT_MANAGER, seed_roles
from tests.browser.test_reports_in_chromium import assert_charts_drawn, log_in, page, rows

__all__ = ["page"]  # the fixture

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("chromium"),  # fails in CI when missing, never skips there
]

DAYS = 30


def counted(now: datetime) -> dict[str, object]:
    """The page's figures, counted from the rows."""
    start = timezone.make_aware(
        datetime.combine(timezone.localtime(now).date() - timedelta(days=DAYS - 1), time.min)
    )
    production = Deployment.objects.filter(environment="production").prefetch_related(
        "incidents", "pull_requests"
    )
    failed_ids = {d.pk for d in production if d.status in Deployment.FINAL or d.incidents.exists()}
    finished = [d for d in production if d.finished_at and start <= d.finished_at < now]
    deployed = [d for d in finished if d.status in Deployment.DEPLOYED]
    changes = [
        pr
        for pr in PullRequest.objects.select_related("issue").prefetch_related("deployments")
        if pr.deployed_at and start <= pr.deployed_at < now
    ]
    providers: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for pr in changes:
        row = providers[pr.issue.provider]
        row["changes"] += 1
        row["cost"] += float(pr.issue.cost_usd) / pr.issue.pull_requests.count()
        spoiled = any(
            d.pk in failed_ids for d in pr.deployments.all() if d.environment == "production"
        )
        row["good"] += not spoiled
    for d in finished:
        for provider in {pr.issue.provider for pr in d.pull_requests.select_related("issue")}:
            providers[provider]["deployments"] += 1
            providers[provider]["failed"] += d.pk in failed_ids
    completed = Issue.objects.filter(
        status__in=list(Issue.OUTCOMES), completed_at__gte=start, completed_at__lt=now
    ).exclude(started_at=None)
    return {
        "deployed": len(deployed),
        "finished": len(finished),
        "failed": sum(d.pk in failed_ids for d in finished),
        "changes": len(changes),
        "failure_rate": f"{100 * sum(d.pk in failed_ids for d in finished) / len(finished):.1f}%",
        "frequency": round(len(deployed) / DAYS, 4),
        "providers": {name: dict(row) for name, row in providers.items()},
        "completed": completed.count(),
    }


def number(text: str) -> float:
    return float(text.replace("–", "nan"))


def test_a_product_manager_reads_the_delivery_page(page, live_server):
    base = live_server.url
    seed_roles()
    call_command("seed_demo", issues=300, stdout=io.StringIO())
    pm = User.objects.create_user("pm", password="pm-pass-1234", is_staff=True)
    pm.groups.add(Group.objects.get(name=PRODUCT_MANAGER))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, base, "pm", "pm-pass-1234")

    page.click("#tamma-reports a:text('Delivery')")  # linked from the admin's index
    page.select_option("select[name=days]", str(DAYS))
    with page.expect_navigation():
        page.click("form.tamma-filters input[type=submit]")
    assert page.url.endswith(f"/reports/delivery/?days={DAYS}")
    expected = counted(timezone.now())
    assert expected["finished"] > 10 and expected["failed"] > 0  # the demo is rich enough

    counts = page.inner_text("#counts")
    assert counts.startswith(
        f"{expected['deployed']} deployed of {expected['finished']} finished, "
        f"{expected['failed']} failed, rolled back or caused an incident; "
        f"{expected['changes']} changes deployed;"
    ), counts
    frequency = page.inner_text("#kpi-deployment-frequency .value")
    assert number(frequency.split()[0]) == expected["frequency"]
    assert page.inner_text("#kpi-change-failure-rate .value") == expected["failure_rate"]
    for key in ("deployment-frequency", "lead-time-hours", "change-failure-rate"):
        band = page.inner_text(f"#kpi-{key} .tamma-band")
        assert band in {"elite", "high", "medium", "low"}, key
    assert page.inner_text("#bands tbody tr:nth-child(2)") == (
        "Lead time for changes\tunder 24 h\tunder 7 d\tunder 30 d"
    )

    shown = {}
    for row in rows(page, "#providers"):
        cells = [cell.inner_text() for cell in row.locator("td").all()]
        shown[cells[0]] = cells[1:]
    assert set(shown) == set(expected["providers"])
    for provider, figures in expected["providers"].items():
        deployments, failure, changes, good, cost, *_ = shown[provider]
        assert int(deployments) == figures.get("deployments", 0), provider
        assert int(changes) == figures.get("changes", 0), provider
        assert int(good) == figures.get("good", 0), provider
        assert number(cost) == pytest.approx(figures.get("cost", 0), abs=1e-4), provider
        if figures.get("deployments"):
            rate = 100 * figures["failed"] / figures["deployments"]
            assert failure == f"{rate:.1f}%", provider
    waiting = page.inner_text("#waiting")
    assert re.search(rf"on the {expected['completed']} issues completed", waiting), waiting
    assert_charts_drawn(page, 3)
    assert errors == []
