"""Browser tests: Debian's Chromium driven by the Python playwright package, against a real server
(`tunelab serve`, in-process worker) on a free port.

Screenshots of every page are written when TUNELAB_SCREENSHOTS names a folder
(`TUNELAB_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest tests/web`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from service.server_proc import ServerProcess

CHROMIUM = os.environ.get("TUNELAB_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("TUNELAB_SCREENSHOTS")
WEIGHTS: dict[str, int] = {}


@pytest.fixture(scope="session")
def web_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("web-srv")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    # Per module, not per session: Playwright's sync API runs an event loop in this thread while a
    # browser is open, and a later module on the same pytest-xdist worker that calls asyncio.run()
    # (the stream tests) or opens its own browser would fail under it. A launch is about a second.
    yield from launch_browser()


def launch_browser():
    """Chromium through Playwright's sync API, for as long as the generator runs. Its event loop
    runs in this thread meanwhile, so every browser fixture is module-scoped: the loop is gone
    before the next module (asyncio.run() there)."""
    if not Path(CHROMIUM).is_file():
        from sysdeps import missing_dependency

        missing_dependency(f"Chromium (none at {CHROMIUM})", "Run `scripts/system-deps test` (or set TUNELAB_CHROMIUM).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-dev-shm-usage"])
        yield b
        b.close()


class Page:
    """A browser tab with helpers; collects JavaScript errors (a test fails on any)."""

    def __init__(self, context, base: str):
        self.context, self.base = context, base
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Chromium logs every 4xx/5xx response as a console error; tests check statuses themselves.
        self.page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                     and self.errors.append(m.text))
        self.page.on("dialog", lambda d: d.accept())
        self.page.set_default_timeout(30_000)

    def goto(self, path: str):
        return self.page.goto(self.base + path)

    def sign_in(self, key: str) -> None:
        self.goto("/login")
        self.page.get_by_role("textbox", name="API key").fill(key)
        self.page.locator("#panel-key").get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r".*/datasets$"))

    def weigh(self, name: str) -> int:
        """Bytes this page loaded (document + scripts + styles), as the browser counted them."""
        size = self.page.evaluate("""() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource').filter(r => !r.name.includes('/stream'));
            return (nav ? nav.decodedBodySize : 0) + res.reduce((n, r) => n + (r.decodedBodySize || 0), 0);
        }""")
        WEIGHTS[name] = size
        return size

    def shot(self, name: str, full: bool = True) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=full)


@pytest.fixture
def tab(browser, web_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    tab = Page(context, web_server.url)
    yield tab
    context.close()
    assert not tab.errors, f"JavaScript errors: {tab.errors}"


def pytest_sessionfinish(session, exitstatus):
    if WEIGHTS:
        heaviest = max(WEIGHTS, key=WEIGHTS.get)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"web page weights (bytes): {json.dumps(WEIGHTS)}")
            reporter.write_line(f"heaviest page: {heaviest}, {WEIGHTS[heaviest]:,} bytes")
