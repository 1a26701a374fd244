"""The "Resume from step N" button of a cancelled run: on the jobs list (a link to it) and the
job's page; one click requeues the run, the live page follows it from the checkpoint to its end.
(That it then ends with an uninterrupted run's metrics, charged once, is tests/service/
test_job_resume.py's.)"""

from __future__ import annotations

import re

import pytest

from playwright.sync_api import expect

from service.helpers import events, upload
from service.test_job_resume import run_and_cancel


@pytest.mark.slow      # a LoRA run cancelled then resumed to the end in the browser (`make test-slow`)
def test_resume_button_continues_a_cancelled_run(tab, web_server, banking_subset):
    org = web_server.create_tenant("resumers", "ana@resumers.test")
    with web_server.client(org["api_key"]) as c:
        job = run_and_cancel(c, upload(c, banking_subset[0])["id"])
    step, page = job["resume_from_step"], tab.page
    assert job["resumable"] and step > 0, job

    tab.sign_in(org["api_key"])
    tab.goto("/jobs")
    row = page.locator("tr", has=page.locator(f"a[href='/jobs/{job['id']}']").first)
    link = row.locator("[data-resume-link]")
    expect(link).to_have_text(f"resume from step {step}")
    link.click()
    page.wait_for_url(re.compile(rf".*/jobs/{job['id']}#resume$"))
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.get_by_role("status").filter(has_text="Cancelled.")).to_contain_text(f"checkpoint at step {step} was kept")
    button = page.get_by_role("button", name=f"Resume from step {step}")
    expect(button).to_be_visible()
    page.evaluate("window.scrollTo(0, 0)")
    tab.shot("06b-job-resume", full=False)

    button.click()
    page.wait_for_url(re.compile(rf".*/jobs/{job['id']}$"))
    expect(page.get_by_role("button", name=re.compile("Resume from step"))).to_have_count(0)
    expect(page.locator("#events")).to_contain_text(f"Resumed by ana@resumers.test from its checkpoint at step {step}.")
    # the live page follows the run to its end (it reloads then) with the model to try
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=600_000)
    expect(page.get_by_role("link", name="Try it in the playground")).to_be_visible()
    with web_server.client(org["api_key"]) as c:
        resumed = [e["message"] for e in events(c, job["id"], "progress") if "resuming from checkpoint" in e["message"]]
        assert resumed and resumed[-1].endswith(f"step {step}"), resumed
        assert c.get(f"/api/v1/jobs/{job['id']}").json()["attempts"] == 2
