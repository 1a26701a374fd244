"""Status, time and money say the same thing everywhere: a job page whose status and progress line
agree from queued to succeeded, relative times that stay true while a page is open, dollars
rounded for people (the ledger's exact figure on hover) on the job, usage and compare pages, and
a charge below the quote that says why."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest

from tunelab.training.progress import PhaseEta, ProgressEvent
from tunelab.web.format import Money, duration, iso, money, money_exact, when

from .consistency_helpers import finished_runs, start_runs

MONEY = re.compile(r"^-?\$[\d,]+\.\d{2,}$")


@pytest.mark.parametrize("value, short, exact", [
    ("99.999344", "$100.00", "$99.999344"),          # a balance after a few cents of runs
    ("0.002431", "$0.0024", "$0.002431"),            # two significant digits under a dollar
    ("0.5", "$0.50", "$0.500000"),
    ("0.0149", "$0.015", "$0.014900"),
    ("0.999999", "$1.00", "$0.999999"),              # rounding up to a dollar shows cents
    ("1234.5678", "$1,234.57", "$1,234.567800"),
    ("12.500000", "$12.50", "$12.500000"),
    ("0", "$0.00", "$0.000000"),
    ("0.000001", "$0.000001", "$0.000001"),          # the ledger's smallest unit is kept
    ("-0.0042", "-$0.0042", "-$0.004200"),
    ("$0.0042", "$0.0042", "$0.004200"),             # an amount already written in dollars
    (Decimal("3.14159"), "$3.14", "$3.141590"),
    (0.1, "$0.10", "$0.100000"),
    (None, "—", "—"),
    ("not money", "—", "—"),
    ("NaN", "—", "—"),
])
def test_money_is_rounded_for_people_and_exact_on_hover(value, short, exact):
    assert money(value) == short and money_exact(value) == exact
    m = Money(value)
    assert m == short and m.exact == exact


@pytest.mark.parametrize("ago, text", [(0, "just now"), (59, "just now"), (101, "1 min ago"), (3599, "59 min ago"),
                                       (3600, "1 h ago"), (86399, "23 h ago")])
def test_relative_times(ago, text):
    at = datetime.now(timezone.utc) - timedelta(seconds=ago)
    assert when(at) == text
    assert when(at.replace(tzinfo=None)) == text          # the database's naive UTC datetimes


def test_durations_and_zoned_timestamps():
    assert [duration(s) for s in (None, 0.4, 1, 89, 180, 5399, 7200)] == \
        ["—", "under 1 s", "1 s", "89 s", "3 min", "90 min", "2.0 h"]
    # a browser reads a zoneless ISO time as local: the pages' datetimes carry their zone
    assert iso(datetime(2026, 1, 2, 3, 4, 5)).endswith("+00:00")


def test_every_long_step_gets_an_eta():
    """Encoding texts (linear-probe's long step) reports rows done of total and no ETA of its own:
    the rate so far gives one; an ETA the loop computed itself is kept."""
    now = [100.0]
    eta = PhaseEta(lambda: now[0])
    seen = []
    for step, t in ((0, 100.0), (100, 102.0), (300, 106.0), (1000, 120.0)):
        now[0] = t
        seen.append(eta(ProgressEvent("encode", step, 1000)).eta_s)
    assert seen == [None, 18.0, 14.0, 0.0]
    assert eta(ProgressEvent("train", 5, 10, eta_s=7.5)).eta_s == 7.5


def _cost_panel(status: str, below: bool) -> str:
    from tunelab.web.deps import templates

    cost = {"state": "settled", "below_range": below, "estimate": Money("0.004000"), "low": Money("0.003000"),
            "high": Money("0.006000"), "charged": Money("0.001234"), "reserved": Money("0"), "compute_seconds": 12.0}
    job = SimpleNamespace(id="ftjob-x", status=status)
    return templates.env.get_template("_cost.html").render(job=job, cost=cost)


@pytest.mark.parametrize("status, why", [("succeeded", "finished sooner than estimated"),
                                         ("cancelled", "was cancelled"), ("failed", "stopped when it failed")])
def test_a_charge_below_the_quote_says_why(status, why):
    html = _cost_panel(status, below=True)
    assert "Charged less than the quoted range ($0.003–$0.006)" in html and why in html
    assert 'title="$0.001234"' in html and ">$0.0012<" in html
    assert "data-below-range" not in _cost_panel(status, below=False)


def _line(page) -> dict:
    return page.evaluate("""() => {
        const q = s => document.querySelector(s);
        return {badge: (q('#job-status') || {}).textContent || '', phase: (q('[data-phase]') || {}).textContent || '',
                eta: (q('[data-eta]') || {}).textContent || '', label: (q('[data-eta-label]') || {}).textContent || '',
                steps: (q('[data-steps]') || {}).textContent || ''};
    }""")


def test_job_page_status_and_progress_agree_from_queued_to_succeeded(tab, web_server, tmp_path_factory):
    """The second of two runs waits in the queue behind the first: its page, opened at once and
    followed live, never shows a running job as queued (or a queued one with a training ETA)."""
    runs = start_runs(web_server, tmp_path_factory.mktemp("consistency"))
    tab.sign_in(runs["key"])
    page = tab.page
    tab.goto(f"/jobs/{runs['jobs'][1]}")
    seen, deadline = [], time.time() + 600
    while time.time() < deadline:
        line = {k: v.strip() for k, v in _line(page).items()}
        status = line["badge"]
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status in ("queued", "validating", "paused"):
            assert line["phase"] == status, line
            assert line["label"] == "" and "estimating" not in line["eta"] and line["steps"] == "", line
        elif status == "running":
            assert line["phase"] not in ("queued", "validating"), line
            assert line["label"] == "ETA", line
        elif status == "succeeded":
            break
        else:
            pytest.fail(f"the run ended {status}: {line}")
        page.wait_for_timeout(150)
    # watched it move, live: the worker runs one job at a time, so the second starts queued
    assert seen[0] == "queued" and "running" in seen and seen[-1] == "succeeded", seen
    page.wait_for_function("() => !document.querySelector('[data-eta]')")   # reloaded: nothing left to wait for
    page.wait_for_load_state()
    assert page.locator("progress#job-progress").get_attribute("value") == "100"
    charged = page.locator("[data-money=charged]")
    assert MONEY.match(charged.locator(".metric-value").inner_text()), charged.inner_text()
    assert re.match(r"^\$\d+\.\d{6}$", charged.get_attribute("title"))
    assert "charged so far" not in charged.inner_text()
    created = page.locator("time[data-relative]").first.inner_text()
    assert created in ("just now",) or created.endswith("min ago"), created
    # the cost panel alone, as the page reloads it while a job runs
    r = page.request.get(f"{web_server.url}/jobs/{runs['jobs'][1]}/cost")
    assert r.status == 200 and "data-cost-box" in r.text()


def test_relative_times_stay_true_on_an_open_page(tab, web_server, tmp_path_factory):
    runs = finished_runs(web_server, tmp_path_factory.mktemp("consistency"))
    tab.sign_in(runs["key"])
    page = tab.page
    page.clock.install()
    tab.goto(f"/jobs/{runs['jobs'][0]}")
    stamp = page.locator("time[data-relative]").first
    page.evaluate("""() => { const t = document.querySelector('time[data-relative]');
                            t.setAttribute('datetime', new Date(Date.now() - 20000).toISOString()); }""")
    page.clock.run_for(16_000)
    assert stamp.inner_text() == "just now"
    page.clock.run_for(101_000)                  # the page left open: "just now" no longer
    assert stamp.inner_text() == "2 min ago"
    tab.goto("/jobs")
    assert page.locator("tbody time[data-relative]").count() >= 2


def test_money_in_dollars_on_usage_and_compare(tab, web_server, tmp_path_factory):
    runs = finished_runs(web_server, tmp_path_factory.mktemp("consistency"))
    tab.sign_in(runs["key"])
    page = tab.page
    tab.goto("/usage")
    for key in ("available", "spent", "granted"):
        box = page.locator(f"[data-money={key}]")
        assert MONEY.match(box.locator(".metric-value").inner_text()), key
        assert re.match(r"^\$[\d,]+\.\d{6}$", box.get_attribute("title")), key
    charged = page.locator("td[data-charged]").first
    assert MONEY.match(charged.inner_text()) and charged.get_attribute("title").count(".") == 1
    ran = page.get_by_role("table").filter(has_text="Ran for")
    assert "under 1 s" not in ran.locator("tbody tr").first.locator("td").last.inner_text().split("training")[0]

    a, b = runs["jobs"]
    tab.goto(f"/comparisons/runs?job={a}&job={b}")
    assert page.locator("th", has_text="compute s").count() == 0
    cells = page.locator("td[data-cost-money]")
    assert cells.count() == 2, page.locator("main").inner_text()[:3000]
    for i in range(2):
        text = cells.nth(i).inner_text()
        assert re.match(r"^\$\d+\.\d{2,} \d+ s$", text), text           # dollars, seconds beside
        assert re.match(r"^\$\d+\.\d{6}$", cells.nth(i).get_attribute("title"))
    assert "in dollars" in page.locator("figure.hbars").last.inner_text()
