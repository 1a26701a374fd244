"""A broken file shows its error with the line number; another tenant's ids are "not found";
forms without their CSRF token are refused; no page shows a traceback."""

from __future__ import annotations

import re

import httpx

from service.helpers import upload
from service.server_proc import ServerProcess


def test_broken_file_shows_its_line(tab, web_server, tmp_path):
    initech = web_server.create_tenant("initech", "ops@initech.test")
    ragged = tmp_path / "broken.csv"
    ragged.write_text("text,label\nthe parcel never arrived,delivery\nmy card was charged twice,billing\n"
                      "where is my refund,billing,extra,fields\nthanks a lot,other\n", encoding="utf-8")
    tab.sign_in(initech["api_key"])
    page = tab.page
    page.set_input_files("#file", str(ragged))
    page.get_by_role("button", name="Upload and check").click()
    result = page.locator("#upload-result")
    result.get_by_text("was not imported").wait_for()
    text = result.inner_text()
    assert "line 4" in text, text                          # the ragged row, header counted
    assert "ragged_row" in text and "how to fix it" in text.lower()
    assert "remove the extra" in text.lower()
    assert "Nothing was stored" in text
    tab.shot("03-upload-error")

    # A file that reads but has row-level errors is kept, with each error's lines and fix; no training.
    empty = tmp_path / "empty_texts.csv"
    rows = [f"{t},{lab}" for t, lab in [("great value", "pos"), ("", "neg"), ("awful", "neg"), ("lovely", "pos"),
                                        ("", "pos"), ("not good", "neg")]]
    empty.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    page.set_input_files("#file", str(empty))
    page.get_by_role("button", name="Upload and check").click()
    page.wait_for_url(re.compile(r".*/datasets/file-"))
    report = page.locator("table.issues").inner_text()
    assert "empty_text" in report and "lines 3, 6" in report, report
    assert page.get_by_role("link", name="Train a model on it").count() == 0
    assert page.get_by_text("training on it is refused").is_visible()
    tab.shot("03b-dataset-with-errors")


def test_other_tenants_ids_are_not_found(tab, web_server, shared_copy, tmp_path):
    umbrella = web_server.create_tenant("umbrella", "ops@umbrella.test")
    globex = web_server.create_tenant("globex", "ops@globex.test")
    small = tmp_path / "small.csv"
    # 60 rows: enough for a run to be accepted (data/minimums.py: at least 10 test rows)
    small.write_text("text,label\n" + "\n".join(f"text number {i},{'ab'[i % 2]}" for i in range(60)) + "\n")
    with web_server.client(umbrella["api_key"]) as api:
        ds = upload(api, small)
        job = api.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot"}).json()
        api.post(f"/api/v1/jobs/{job['id']}/cancel")        # nothing needs to run: only its id matters

    tab.sign_in(globex["api_key"])
    page = tab.page
    for path in (f"/jobs/{job['id']}", f"/comparisons/{job['id']}", f"/datasets/{ds['id']}",
                 f"/train?dataset={ds['id']}", f"/jobs/{job['id']}/stream"):
        response = tab.goto(path)
        assert response.status == 404, path
        assert page.get_by_role("heading", name="Not found").is_visible(), path
        assert "Traceback" not in page.content()
    tab.goto(f"/jobs/{job['id']}")
    tab.shot("17-not-found")
    # Posting to another tenant's job (with this session's valid token) is "not found" too.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    tab.goto("/jobs")
    r = page.request.post(f"{web_server.url}/jobs/{job['id']}/cancel", form={"csrf_token": token})
    assert r.status == 404


def test_forms_need_their_csrf_token_and_a_session(web_server, browser):
    acme_key = web_server.create_tenant("csrf-co", "ops@csrf.test")["api_key"]
    with httpx.Client(base_url=web_server.url, follow_redirects=False) as c:
        assert c.get("/datasets").headers["location"].startswith("/login")
        r = c.post("/login", data={"method": "key", "api_key": acme_key, "csrf_token": "forged"})
        assert r.status_code == 403 and "expired" in r.text
        page = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"method": "key", "api_key": acme_key, "csrf_token": token, "next": "//evil.test"})
        assert r.status_code == 303 and r.headers["location"] == "/datasets"      # no open redirect
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
        r = c.post("/settings/keys", data={"name": "sneaky"})                      # no token
        assert r.status_code == 403 and "Traceback" not in r.text
        r = c.post("/settings/keys", data={"name": "x", "csrf_token": "wrong"})
        assert r.status_code == 403
        r = c.get("/settings")
        token = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
        r = c.post("/settings/keys", data={"name": "cross-site", "csrf_token": token},
                   headers={"Origin": "https://evil.test"})
        assert r.status_code == 403
        c.cookies.set("tl_session", c.cookies.get("tl_session")[:-4] + "beef")     # a tampered cookie
        assert c.get("/datasets").status_code == 303


def test_guessing_sign_ins_is_rate_limited(tmp_path):
    """The API's failed-auth limit applies to the sign-in form; over it, even the right key waits."""
    srv = ServerProcess(tmp_path / "srv", rate_limit_failed_auth=3).start()
    try:
        key = srv.create_tenant("limited", "ops@limited.test")["api_key"]
        with httpx.Client(base_url=srv.url, follow_redirects=False) as c:
            def attempt(api_key: str, password: str | None = None) -> int:
                token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
                data = {"csrf_token": token, "method": "key", "api_key": api_key}
                if password is not None:
                    data.update(method="password", email="ops@limited.test", password=password)
                return c.post("/login", data=data).status_code
            assert [attempt("tl-0123456789.wrong") for _ in range(3)] == [401, 401, 401]
            assert attempt("", password="guess") == 429
            assert attempt(key) == 429                     # blocked, whatever is tried
    finally:
        srv.stop()
