"""The admin as a person uses it, in headless Chromium: grant a family to a role, create a
token, and see the result on /metrics."""

from __future__ import annotations

import os
import shutil

import pytest
from django.contrib.auth.models import Group, User

from tamma_metrics.roles import seed_roles
from tests.utils import parse

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("chromium"),  # fails in CI when missing, never skips there
]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page(live_server):
    # Playwright's sync API runs an event loop in this thread; Django's ORM then refuses
    # to run here unless told this test is not async code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        page = browser.new_page()
        page.set_default_timeout(15_000)
        yield page
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


def test_grant_a_family_to_a_role_and_create_a_token(page, live_server, client):
    seed_roles()
    User.objects.create_superuser("admin", password="admin-pass")
    analyst = User.objects.create_user("analyst")
    analyst.groups.add(Group.objects.create(name="analysts"))

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass")
    with page.expect_navigation():
        page.click("input[type=submit]")

    # Grant one family to the role with the list action.
    page.goto(f"{live_server.url}/admin/tamma_metrics/metricfamily/?q=queue_depth")
    page.check("input.action-select")
    page.select_option("select[name=action]", "grant_to_role")
    page.select_option("select[name=role]", label="analysts")
    with page.expect_navigation():
        page.click("button[name=index]")
    assert "1 families granted to analysts." in page.inner_text("ul.messagelist")

    # Create a token for the analyst: the secret is shown once, in the message.
    page.goto(f"{live_server.url}/admin/tamma_metrics/apitoken/add/")
    page.fill("#id_name", "analyst-laptop")
    page.fill("#id_user", str(analyst.pk))
    with page.expect_navigation():  # the add page has no message list to confuse
        page.click("input[name=_save]")
    message = page.inner_text("ul.messagelist")
    token = next(word for word in message.split() if word.startswith("tmm_"))

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert parse(response.content.decode()).names() == {"tamma_queue_depth"}
