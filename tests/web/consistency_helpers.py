"""Two finished linear-probe runs on a small SMS spam slice, made once per test session on the
shared web server (tests/web/test_consistency.py and test_phone_layout.py both use them): the
cheapest strategy that gives a real model, on 160 rows, so that a job page, the models list and a
side-by-side comparison have something in them."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

SMS = (Path(os.environ.get("TUNELAB_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
       / "datasets" / "text-classification" / "sms_spam.tsv")

_MADE: dict[str, dict] = {}
ROWS_PER_LABEL = 80


def sms_slice(dest: Path) -> Path:
    rows, taken = [], {"ham": 0, "spam": 0}
    with open(SMS, encoding="utf-8") as f:
        for line in f:
            label, _, text = line.rstrip("\n").partition("\t")
            if label in taken and taken[label] < ROWS_PER_LABEL and text.strip():
                taken[label] += 1
                rows.append((text, label))
    with open(dest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return dest


def wait_job(api, job_id: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def start_runs(web_server, tmp: Path) -> dict:
    """The tenant, its dataset and two linear-probe jobs, submitted back to back (the second waits
    in the queue behind the first on the single in-process worker). Not waited for."""
    if web_server.url in _MADE:
        return _MADE[web_server.url]
    tenant = web_server.create_tenant("consistency-co", "ops@consistency.test")
    with web_server.client(tenant["api_key"]) as api:
        with open(sms_slice(tmp / "sms_small.csv"), "rb") as f:
            r = api.post("/api/v1/datasets", files={"file": ("sms_small.csv", f)})
        assert r.status_code == 201, r.text
        ds = r.json()
        jobs = []
        for seed in (1, 2):
            # one comparison group (as the wizard's "compare" starts), so that /comparisons lists them
            r = api.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "linear-probe", "seed": seed,
                                               "model": "minilm", "metadata": {"compare_group": "cmp-consistency"}})
            assert r.status_code in (200, 201, 202), r.text
            jobs.append(r.json()["id"])
    _MADE[web_server.url] = {"key": tenant["api_key"], "dataset": ds["id"], "jobs": jobs}
    return _MADE[web_server.url]


def finished_runs(web_server, tmp: Path) -> dict:
    runs = start_runs(web_server, tmp)
    with web_server.client(runs["key"]) as api:
        runs["final"] = [wait_job(api, j) for j in runs["jobs"]]
    assert all(j["status"] == "succeeded" for j in runs["final"]), runs["final"]
    return runs
