"""Batch predictions in the browser: the playground scores a pasted list (a table of label and
probability per line, the same as the predict API), and "Predict a file" uploads a CSV, follows the
job on its page and downloads the output, checked row by row against the predict API."""

from __future__ import annotations

import csv
import io
import re

import pytest

from service.helpers import upload, wait_job


def _model(api, path) -> str:
    ds = upload(api, path)
    job = api.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "linear-probe"}).json()
    done = wait_job(api, job["id"])
    assert done["status"] == "succeeded", done
    return done["fine_tuned_model"]


def test_score_a_list_and_predict_a_file(tab, web_server, banking_subset, tmp_path):
    acme = web_server.create_tenant("batch-co", "ops@batch.test")
    with web_server.client(acme["api_key"]) as api:
        model = _model(api, banking_subset[0])
        with open(banking_subset[1], newline="", encoding="utf-8") as f:
            texts = [r["text"] for r in csv.DictReader(f)][:120]
        reference = api.post(f"/api/v1/models/{model}/predict", json={"texts": texts}).json()["data"]

        tab.sign_in(acme["api_key"])
        page = tab.page
        tab.goto(f"/playground?model={model}")
        # Score a list: three lines, a table of three rows with the predict API's labels
        page.locator("#texts").fill("\n".join(texts[:3]) + "\n\n")
        page.get_by_role("button", name="Score the list").click()
        rows = page.locator("[data-scored] tbody tr")
        rows.first.wait_for()
        assert rows.count() == 3
        for i in range(3):
            assert rows.nth(i).locator("[data-label]").inner_text() == reference[i]["label"]
            assert rows.nth(i).locator("td").nth(1).inner_text() == texts[i]
        too_many = "\n".join(f"text {i}" for i in range(201))
        page.locator("#texts").fill(too_many)
        page.get_by_role("button", name="Score the list").click()
        page.get_by_text("At most 200 lines here").wait_for()

        # Predict a file: a CSV with an id column and the texts; the job page, then the download
        source = tmp_path / "tickets.csv"
        with open(source, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "message"])
            for i, t in enumerate(texts):
                w.writerow([i, t])
        page.locator("#batch-file").set_input_files(str(source))
        page.locator("#batch-topk").fill("2")
        page.get_by_role("button", name="Predict the file").click()
        page.wait_for_url(re.compile(r".*/jobs/ftjob-[^/]+$"))
        assert page.locator("[data-batch-job]").is_visible()
        link = page.locator("[data-download-output]")
        link.wait_for(timeout=300_000)          # the page reloads when the job ends
        assert "120 rows labelled" in page.locator("[data-batch-summary]").inner_text()
        tab.shot("09b-batch-prediction")
        with page.expect_download() as got:
            link.click()
        body = open(got.value.path(), encoding="utf-8").read()
        out = list(csv.DictReader(io.StringIO(body)))
        assert len(out) == len(texts)
        for i, (row, ref) in enumerate(zip(out, reference)):
            assert int(row["row"]) == i + 1 and row["text"] == texts[i]
            if row["label"] != ref["label"]:      # batches of another size: near ties only
                assert abs(ref["scores"][row["label"]] - ref["score"]) < 2e-2
            else:
                assert float(row["probability"]) == pytest.approx(ref["score"], abs=1e-2)
            assert row["top_1_label"] == row["label"] and "top_2_label" in row and "top_3_label" not in row
