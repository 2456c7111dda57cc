"""The admin index links the reports: the demo includes the app's fragment in its own
admin/index.html; a host project without one sets ``admin.site.index_template`` (the
layout at three widths is checked in Chromium, tests/browser/)."""

from __future__ import annotations

import pytest
from django.contrib import admin

from tamma_metrics.roles import PRODUCT_MANAGER, seed_roles
from tests.utils import staff_client

pytestmark = pytest.mark.django_db

REPORTS = {
    "Velocity": "/reports/velocity/",
    "Delivery": "/reports/delivery/",
    "System health": "/reports/health/",
    "Metric families": "/reports/families/",
}


def assert_reports_first(body: str, links: list[str]) -> None:
    """One Reports block, inside the main column and above the applications, with
    ``links`` in order."""
    assert body.count('id="tamma-reports"') == 1
    block = body[body.index('id="tamma-reports"') :]
    block = block[: block.index("</dl>")]
    shown = [text for text, path in REPORTS.items() if f'href="{path}">{text}</a>' in block]
    assert shown == links
    assert body.index('id="content-main"') < body.index('id="tamma-reports"')
    applications = body.find('class="app-')  # none for who may change no model
    assert applications == -1 or body.index('id="tamma-reports"') < applications


def test_the_demo_includes_the_fragment(admin_client):
    body = admin_client.get("/admin/").content.decode()
    assert 'class="app-tamma_metrics module' in body
    assert_reports_first(body, list(REPORTS))
    assert "<title>Site administration | Tamma metrics</title>" in body  # the demo's brand


def test_a_host_project_sets_the_index_template(admin_client, settings, monkeypatch):
    # A project with no admin/index.html of its own (the demo's templates folder left out).
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": []}]
    monkeypatch.setattr(admin.site, "index_template", "tamma_metrics/admin/index.html")
    body = admin_client.get("/admin/").content.decode()
    assert_reports_first(body, list(REPORTS))
    assert "<title>Site administration | Django site admin</title>" in body  # not the demo's


def test_the_families_link_needs_the_view_permission():
    seed_roles()
    body = staff_client("pm", PRODUCT_MANAGER).get("/admin/").content.decode()
    assert_reports_first(body, ["Velocity", "Delivery", "System health"])
    assert 'class="app-' not in body
