"""The wizard's compare with a time limit, over HTTP against a real server (no browser): "Time
limit for the comparison" and "exhaustive" are on the page; with a limit the comparison is one
compare job with that budget (a group of train jobs has no budget), without one a group as before;
a limit that is not a duration is explained on the page."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from . import generative_helpers as gh


@pytest.fixture(scope="module")
def wiz(web_server, banking_subset):
    tenant = web_server.create_tenant("wizard-budget", "ops@wizard-budget.test")
    with web_server.client(tenant["api_key"]) as api, open(banking_subset[0], "rb") as f:
        r = api.post("/api/v1/datasets", files={"file": ("banking.csv", f)})
    assert r.status_code == 201, r.text
    client, csrf = gh.signed_in(web_server.url, tenant["api_key"])
    yield SimpleNamespace(srv=web_server, tenant=tenant, dataset=r.json()["id"], client=client, csrf=csrf)
    client.close()


def _compare(wiz, **fields):
    form = {"csrf_token": wiz.csrf, "dataset": wiz.dataset, "model": "minilm", "action": "compare",
            "compare": ["zero-shot", "linear-probe"]} | fields
    return wiz.client.post("/train", data=form)


def test_the_wizard_offers_a_time_limit(wiz):
    page = wiz.client.get(f"/train?dataset={wiz.dataset}").text
    assert "Time limit for the comparison" in page
    assert re.findall(r'<option value="(\d*)"', page.split('name="time_limit"')[1].split("</select>")[0]) == \
        ["", "120", "300", "600", "1800", "3600"]
    assert re.search(r'<input type="checkbox" name="exhaustive" value="1">', page)


def test_a_time_limit_makes_one_compare_job_with_that_budget(wiz):
    r = _compare(wiz, time_limit="300", exhaustive="1")
    assert r.status_code == 303, r.text[-2000:]
    match = re.fullmatch(r"/comparisons/(ftjob-[\w-]+)", r.headers["location"])
    assert match, r.headers["location"]
    with wiz.srv.client(wiz.tenant["api_key"]) as api:
        try:
            cmp = api.get(f"/api/v1/comparisons/{match.group(1)}").json()
            assert cmp["budget"]["seconds"] == 300 and cmp["exhaustive"] is True
            assert cmp["spec"]["strategies"] == ["zero-shot", "linear-probe"] and cmp["spec"]["kind"] == "compare"
            assert wiz.client.get(r.headers["location"]).status_code == 200
        finally:
            api.post(f"/api/v1/jobs/{match.group(1)}/cancel")


def test_a_time_limit_that_is_not_a_duration_is_explained(wiz):
    with wiz.srv.client(wiz.tenant["api_key"]) as api:
        before = len(api.get("/api/v1/jobs").json()["data"])
        r = _compare(wiz, time_limit="soon")
        assert r.status_code == 422
        assert "Time limit for the comparison: &#39;soon&#39; is not a duration" in r.text
        assert len(api.get("/api/v1/jobs").json()["data"]) == before         # nothing queued
