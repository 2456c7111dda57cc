"""The admin index's Reports block in headless Chromium at a laptop's, a desktop's and a
large screen's width: every link holds its text on one line, each description has room to
be read, nothing runs off the page. Screenshots go to the test's folder."""

from __future__ import annotations

import os
import shutil

import pytest
from django.contrib.auth.models import User

from tests.browser.test_admin_in_chromium import CHROMIUM_ARGS

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("chromium"),  # fails in CI when missing, never skips there
]

WIDTHS = (800, 1400, 1920)
LINKS = ["Velocity", "Delivery", "System health", "Metric families"]

# Per link of the block: how many line boxes its text takes, its width, and the width its
# text takes unwrapped in the same font (measured on a copy with white-space: nowrap); per
# description: its width and the width of the text "m" (an em).
MEASURE = """() => {
  const block = document.querySelector('#tamma-reports');
  const links = [...block.querySelectorAll('a')].map((a) => {
    const range = document.createRange();
    range.selectNodeContents(a);
    const copy = a.cloneNode(true);
    copy.style.cssText = 'position:absolute; visibility:hidden; white-space:nowrap; width:auto';
    a.parentNode.appendChild(copy);
    const natural = copy.getBoundingClientRect().width;
    copy.remove();
    return {text: a.textContent.trim(), lines: range.getClientRects().length,
            width: a.getBoundingClientRect().width, natural};
  });
  const descriptions = [...block.querySelectorAll('.tamma-report-about')].map(
    (d) => d.getBoundingClientRect().width);
  const em = parseFloat(getComputedStyle(block).fontSize);
  return {links, descriptions, em, block: block.getBoundingClientRect().width,
          page: document.documentElement.scrollWidth, viewport: window.innerWidth};
}"""


@pytest.fixture
def browser(live_server):
    # Playwright's sync API runs an event loop in this thread; Django's ORM then refuses
    # to run here unless told this test is not async code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def test_the_reports_block_lays_out_at_every_width(browser, live_server, tmp_path):
    User.objects.create_superuser("admin", password="admin-pass")
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin-pass")
        with page.expect_navigation():
            page.click("input[type=submit]")
        assert page.url == f"{live_server.url}/admin/"
        page.screenshot(path=str(tmp_path / f"admin-index-{width}.png"), full_page=True)
        page.locator("#tamma-reports").screenshot(path=str(tmp_path / f"reports-{width}.png"))
        seen = page.evaluate(MEASURE)

        assert [link["text"] for link in seen["links"]] == LINKS, width
        for link in seen["links"]:
            assert link["lines"] == 1, (width, link)
            assert link["width"] >= link["natural"] - 0.5, (width, link)
        # Each description is at least 20 em wide: a readable line, not a column of words.
        assert len(seen["descriptions"]) == len(LINKS), width
        for described in seen["descriptions"]:
            assert described >= 20 * seen["em"], (width, seen)
        assert seen["page"] <= seen["viewport"], (width, seen)  # no sideways scrolling
        # The links go where they say.
        for text, path in zip(
            LINKS,
            ["/reports/velocity/", "/reports/delivery/", "/reports/health/", "/reports/families/"],
            strict=True,
        ):
            href = page.locator("#tamma-reports a", has_text=text).get_attribute("href")
            assert href == path, (width, text)
        page.close()
    assert sorted(path.name for path in tmp_path.glob("*.png")) == sorted(
        name for width in WIDTHS for name in (f"admin-index-{width}.png", f"reports-{width}.png")
    )
