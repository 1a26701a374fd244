"""Security headers (issue 22, item 14): the UI's pages carry a Content-Security-Policy that forbids
framing and inline script, and X-Frame-Options, Referrer-Policy, nosniff; the API's JSON too. In
Chromium: another site cannot frame a page (the CSRF-protected buttons cannot be clickjacked), and
the pages run under their policy without a single violation."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from service.server_proc import ServerProcess
from web.conftest import launch_browser

SQLITE_ONLY = True
PAGES = ["/datasets", "/jobs", "/train", "/models", "/settings", "/usage", "/no-such-page"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("headers"), worker=False).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    # This module's own: the UI tests' session-wide browser would keep Playwright's event loop
    # running in this thread for every module after this one.
    yield from launch_browser()


@pytest.fixture(scope="module")
def key(server) -> str:
    return server.create_tenant("headers", "ops@headers.test")["api_key"]


@pytest.fixture(scope="module")
def signed_in(server, key):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
        assert c.post("/login", data={"csrf_token": token, "method": "key", "api_key": key}).status_code == 303
        yield c


def _policy(value: str) -> dict[str, list[str]]:
    out = {}
    for part in filter(None, (p.strip() for p in value.split(";"))):
        name, *sources = part.split()
        out[name] = sources
    return out


def _common(r: httpx.Response) -> None:
    assert r.headers.get("x-content-type-options") == "nosniff", r.url
    assert r.headers.get("x-frame-options") == "DENY", r.url
    assert r.headers.get("referrer-policy") in ("same-origin", "no-referrer"), r.url


def test_pages_carry_the_policy(server, signed_in):
    answers = [signed_in.get(path) for path in [*PAGES, "/static/app.js"]] + [httpx.get(server.url + "/login")]
    for r in answers:
        path = r.url.path
        assert r.status_code in (200, 404), (path, r.status_code)
        _common(r)
        csp = _policy(r.headers["content-security-policy"])
        assert csp["frame-ancestors"] == ["'none'"], path
        assert csp["default-src"] == ["'self'"] and csp["object-src"] == ["'none'"], path
        assert csp["script-src"] == ["'self'"], path                # no inline script, no eval
        assert "'unsafe-inline'" not in csp["style-src"], path      # no <style> element either


def test_pages_have_no_inline_script(server, signed_in):
    """What the policy forbids must not be in the pages: a <script> with a body (other than a JSON
    data block), an on...= handler, a javascript: URL."""
    for path, html in [(p, signed_in.get(p).text) for p in PAGES] + [("/login", httpx.get(server.url + "/login").text)]:
        for tag, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S):
            assert not body.strip() or 'type="application/json"' in tag, (path, tag, body[:80])
        assert not re.search(r"\son[a-z]+\s*=", html), path
        assert "javascript:" not in html, path


def test_api_answers_carry_headers(server, key):
    for path, headers, status in [("/api/v1/tenants/me", {"Authorization": f"Bearer {key}"}, 200),
                                  ("/api/v1/tenants/me", {}, 401), ("/healthz", {}, 200),
                                  ("/v1/models", {"Authorization": f"Bearer {key}"}, 200)]:
        r = httpx.get(server.url + path, headers=headers)
        assert r.status_code == status, (path, r.text)
        _common(r)
        assert _policy(r.headers["content-security-policy"]) == {"default-src": ["'none'"],
                                                                  "frame-ancestors": ["'none'"]}, path


class _Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):
        body = f'<!doctype html><title>win a prize</title><iframe id="f" src="{self.target}"></iframe>'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_another_site_cannot_frame_a_page(server, browser):
    """A page on another origin frames the sign-in page (every page has the same policy): Chromium
    refuses to render it. Before issue 22 the frame showed the sign-in form."""
    _Attacker.target = server.url + "/login"
    evil = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        page.wait_for_timeout(1500)
        framed = page.frame_locator("#f").locator("form#panel-key")
        assert framed.count() == 0, "the sign-in form rendered inside another site's frame"
    finally:
        context.close()
        evil.shutdown()


def test_pages_run_under_their_policy(server, key, browser):
    """Sign in, visit the pages, use the jobs filter (it submits on change, from app.js): no CSP
    violation, no script error."""
    context = browser.new_context()
    problems: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                and problems.append(m.text))
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.goto(server.url + "/login")
        page.get_by_role("textbox", name="API key").fill(key)
        page.locator("#panel-key").get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/datasets$"))
        for path in ["/train", "/models", "/settings", "/usage", "/jobs"]:
            page.goto(server.url + path)
        page.select_option("#status", "failed")
        page.wait_for_url(re.compile(r".*/jobs\?status=failed$"))
        assert not problems, problems
    finally:
        context.close()
