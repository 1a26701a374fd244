"""The Infrastructure page in Chromium: the plain-words empty state with the command to run, then
two stored benchmark runs (the second 20% slower at fp32 matmul): the figures, the regression said
plainly, the noisy figure marked, the history chart, the model table with MFU, the costs, a typical
job per catalog model, and the CSV / JSON downloads of a signed-in session."""

from __future__ import annotations

import csv
import io
import json
import re

import httpx
import pytest

from service.server_proc import ServerProcess
from service.test_infrastructure_api import SECOND, WORKER, nothing_stored, write_runs

from .conftest import Page


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of its own (no worker: nothing trains here), so the page's results are this module's."""
    srv = ServerProcess(tmp_path_factory.mktemp("infra-web"), worker=False).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server) -> str:
    return server.create_tenant("infra", "ops@infra.test")["api_key"]


@pytest.fixture
def tab(browser, server, key):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", accept_downloads=True)
    tab = Page(context, server.url)
    tab.sign_in(key)
    yield tab
    context.close()
    assert not tab.errors, f"JavaScript errors: {tab.errors}"


def test_nothing_measured_says_what_to_run(tab, server):
    page = tab.page
    with nothing_stored(server.home):
        page.get_by_role("link", name="Infrastructure").click()
        page.wait_for_url(re.compile(r".*/infrastructure$"))
        assert page.get_by_role("heading", name="Infrastructure", level=1).is_visible()
        empty = page.locator("[data-empty]")
        assert empty.get_by_text("This machine has not been measured yet").is_visible()
        assert empty.locator("[data-command]").inner_text() == "tunelab bench hardware --quick"
        assert page.locator("[data-export]").count() == 0 and page.locator("[data-models]").count() == 0
        # Still useful before any measurement: the machine now, and what a typical job would cost.
        assert page.locator("[data-now]").get_by_text("CPU cores it may use").is_visible()
        assert page.locator("[data-typical='minilm']").get_by_role("row", name=re.compile("^lora")).is_visible()
        tab.shot("18-infrastructure-empty")


def test_figures_regression_models_and_export(tab, server):
    write_runs(server.home)
    page = tab.page
    tab.goto("/infrastructure")
    assert page.get_by_role("link", name="Infrastructure").get_attribute("aria-current") == "page"

    # The regression, in plain words, and the figure it is about marked.
    alert = page.locator("[data-regressions]")
    assert alert.get_by_text("This machine has become slower.").is_visible()
    assert alert.get_by_text("dense matmul, fp32: 20% slower than the run on 2026-12-03").is_visible()
    fp32 = page.locator(".metric", has_text="dense matmul, fp32")
    assert fp32.locator(".metric-value").inner_text().startswith("80.0")
    assert fp32.locator("[data-regressed]").is_visible()
    assert fp32.locator("svg[data-chart] circle").count() == 2          # its history: two measurements
    # The noisy figure says so; the steady ones do not.
    assert page.locator(".metric", has_text="memory bandwidth").locator("[data-noisy]").is_visible()
    assert page.locator("[data-noisy]").count() == 1
    assert page.locator(".metric", has_text="disk read").locator(".metric-value").inner_text().startswith("850")
    page.get_by_text("Every measurement (2)").click()
    assert page.locator("[data-history] tbody tr").count() == 2

    # The model table: tokens/s, samples/s, step times, peak memory, MFU as a percentage, $ per 1M tokens.
    full = page.locator("[data-models] tr[data-model='minilm/full']")
    cells = [c.strip() for c in full.locator("td").all_inner_texts()]
    assert cells[0] == "full" and cells[1] == "training"
    assert cells[3:9] == ["1,300", "55.0", "0.58 s", "0.71 s", "912 MB", "31.0%"]
    assert cells[9].startswith("$0.0")
    probe = page.locator("[data-models] tr[data-model='minilm/linear-probe']")
    assert probe.locator("td").nth(1).inner_text() == "prediction" and probe.locator("td").nth(8).inner_text() == "—"
    assert "model FLOPs utilisation" in page.locator("[data-models] th", has_text="MFU").get_attribute("title")
    assert page.get_by_text(re.compile(r"^MFU$")).count() >= 1

    # Costs: per 1M training tokens, per 1K predictions; a typical job per catalog model.
    assert page.locator(".metric", has_text="per 1M training tokens · minilm full").is_visible()
    per_1k = page.locator(".metric", has_text="per 1K predictions · minilm linear-probe")
    assert per_1k.locator(".metric-value").inner_text().startswith("$0.0000")
    lora = page.locator("[data-typical='minilm']").get_by_role("row", name=re.compile("^lora"))
    assert re.search(r"about \d+ (s|min).*\$0\.\d+", lora.inner_text())
    tab.shot("19-infrastructure")

    # The downloads: the signed-in session's, the API's own export.
    with page.expect_download() as dl:
        page.locator("[data-export='csv']").click()
    download = dl.value
    assert download.suggested_filename == f"tunelab-infrastructure-{WORKER}.csv"
    rows = list(csv.DictReader(io.StringIO(open(download.path(), encoding="utf-8").read())))
    assert {r["name"] for r in rows if r["section"] == "figure"} == {"matmul_fp32", "matmul_bf16", "memory_bandwidth",
                                                                      "disk_read"}
    assert next(r for r in rows if r["name"] == "minilm/full")["mfu"] == "0.31"
    with page.expect_download() as dl:
        page.locator("[data-export='json']").click()
    exported = json.loads(open(dl.value.path(), encoding="utf-8").read())
    assert exported["run"] == SECOND and len(exported["models"]) == 2

    # Without a session the export is the sign-in page, not the data; a bad format is a page, not a 500.
    with httpx.Client(base_url=server.url) as anonymous:
        r = anonymous.get("/infrastructure/export?format=csv", follow_redirects=False)
        assert r.status_code == 303 and "/login" in r.headers["location"]
    assert tab.goto("/infrastructure/export?format=xlsx").status == 422
    assert tab.goto("/infrastructure?worker=nobody").status == 404


# ---- the "Run the benchmark" button: a benchmark job on a worker --------------------------------
@pytest.fixture(scope="module")
def worker_server(tmp_path_factory):
    """A server with its worker (the benchmark runs as a job there), its own home: nothing measured yet."""
    srv = ServerProcess(tmp_path_factory.mktemp("infra-web-worker"), heartbeat_seconds=0.5).start()
    yield srv
    srv.stop()


@pytest.fixture
def member_tab(browser, worker_server):
    tenant = worker_server.create_tenant("bench-web", "ops@bench-web.test")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    tab = Page(context, worker_server.url)
    tab.sign_in(tenant["api_key"])
    tab.key = tenant["api_key"]
    yield tab
    context.close()
    assert not tab.errors, f"JavaScript errors: {tab.errors}"


@pytest.mark.slow     # a benchmark job in the browser; the page itself and the job kind's API run in make test
def test_the_button_runs_the_benchmark_as_a_job_and_its_page_shows_it(member_tab, worker_server, browser):
    page = member_tab.page
    member_tab.goto("/infrastructure")
    form = page.locator("[data-bench-form]")
    assert page.locator("[data-empty]").is_visible()
    assert form.get_by_label("full sweep (every catalog model, ~15 min", exact=False).is_visible()
    assert not form.get_by_label("full sweep", exact=False).is_checked()          # quick by default
    form.get_by_label("device figures only", exact=False).check()
    form.get_by_role("button", name="Run the benchmark").click()
    page.wait_for_url(re.compile(r".*/jobs/ftjob-[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    assert page.get_by_role("heading", name=re.compile("^Hardware benchmark"), level=1).is_visible()
    assert page.get_by_text("device figures only").first.is_visible()
    assert page.locator("[data-live]").is_visible()                      # the live panel follows it

    # It finishes on the worker; the page reloads with what it measured.
    page.wait_for_selector("[data-bench-results], .alert.error", timeout=120_000)
    results = page.locator("[data-bench-results]")
    assert results.is_visible(), page.locator(".alert.error").inner_text()
    assert results.locator(".metric", has_text="dense matmul, fp32").is_visible()
    assert results.get_by_text("The first measurement of this machine").is_visible()
    assert page.locator("#job-status").inner_text().strip() == "succeeded"
    member_tab.shot("25-benchmark-job")

    page.get_by_role("link", name="See it on the Infrastructure page").first.click()
    page.wait_for_url(re.compile(r".*/infrastructure\?worker=.+"))
    assert page.get_by_text("(device figures only)").is_visible()
    assert page.locator(".metric", has_text="dense matmul, fp32").is_visible()
    assert page.locator("[data-bench-jobs]").get_by_role("link", name=job_id[-8:]).is_visible()

    # The lists that show every job render it without a dataset, metrics or strategy.
    member_tab.goto("/jobs")
    row = page.get_by_role("row", name=re.compile(job_id))
    assert row.get_by_text("hardware benchmark").is_visible() and row.get_by_text("this machine").is_visible()
    assert member_tab.goto("/usage").status == 200
    assert page.get_by_text("hardware benchmark").first.is_visible()
    assert member_tab.goto("/comparisons").status == 200
    assert member_tab.goto(f"/comparisons/runs?job={job_id}&job={job_id}x").status == 404

    # A viewer reads the page but gets no button.
    with httpx.Client(base_url=worker_server.url, headers={"Authorization": f"Bearer {member_tab.key}"}) as api:
        viewer = api.post("/api/v1/users", json={"email": "viewer@bench-web.test", "role": "viewer"}).json()
        key = api.post(f"/api/v1/users/{viewer['id']}/api-keys", json={"name": "viewer"}).json()["key"]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    try:
        viewer_tab = Page(context, worker_server.url)
        viewer_tab.sign_in(key)
        viewer_tab.goto("/infrastructure")
        assert viewer_tab.page.locator(".metric", has_text="dense matmul, fp32").first.is_visible()
        assert viewer_tab.page.locator("[data-bench-form]").count() == 0
        assert viewer_tab.goto(f"/jobs/{job_id}").status == 200                # its own organisation's job
        assert not viewer_tab.errors, viewer_tab.errors
    finally:
        context.close()
