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
