"""On a phone (390 x 844, an iPhone 12-14's viewport), the primary action of each list's first row
is on screen without scrolling sideways: the datasets, jobs, models and comparisons lists."""

from __future__ import annotations

import pytest

from .conftest import Page
from .consistency_helpers import finished_runs

WIDTH = 390
# (list page, the primary action of a row there)
LISTS = [("/datasets", "a[href^='/train?dataset=']"),
         ("/jobs", "a[href^='/jobs/']"),
         ("/models", "a[href^='/playground']"),
         ("/comparisons", "a[href^='/comparisons/']")]


@pytest.fixture
def phone(browser, web_server):
    context = browser.new_context(viewport={"width": WIDTH, "height": 844}, locale="en-GB", is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    tab = Page(context, web_server.url)
    yield tab
    context.close()
    assert not tab.errors, f"JavaScript errors: {tab.errors}"


@pytest.mark.parametrize("path, action", LISTS, ids=[p for p, _ in LISTS])
def test_primary_action_of_a_row_is_reachable_on_a_phone(phone, web_server, tmp_path_factory, path, action):
    runs = finished_runs(web_server, tmp_path_factory.mktemp("phone"))
    phone.sign_in(runs["key"])
    page = phone.page
    assert phone.goto(path).status == 200
    link = page.locator("main tbody tr").first.locator(action).first
    link.wait_for()
    box = link.bounding_box()
    assert box is not None and box["width"] > 0, path
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (path, box)
    assert page.evaluate("() => window.scrollX") == 0
    # the page itself never scrolls sideways: only a table inside its own box may
    assert page.evaluate("() => document.documentElement.scrollWidth") <= WIDTH, path
    if path == "/models":
        link.scroll_into_view_if_needed()
        phone.shot("16b-mobile-models", full=False)
    link.click()                     # reachable: a tap on it lands on its page
    page.wait_for_load_state()
    assert page.url != web_server.url + path
