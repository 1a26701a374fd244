"""The whole flow through the real `openai` client pointed at tunelab by base_url."""

from __future__ import annotations

import csv
import time

import httpx
import openai
import pytest

from .helpers import events


SQLITE_ONLY = True   # database-independent: see tests/service/conftest.py

@pytest.fixture(scope="module")
def oai(server, tenant_a):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=tenant_a["api_key"], max_retries=0)


@pytest.mark.slow     # a real fine-tune to an accuracy claim (~50 s); the OpenAI shapes, errors and cancel stay in make test
def test_openai_fine_tuning_flow(oai, server, tenant_a, banking_subset):
    train, test = banking_subset
    with open(train, "rb") as f:
        training = oai.files.create(file=f, purpose="fine-tune")
    with open(test, "rb") as f:
        validation = oai.files.create(file=f, purpose="fine-tune")
    assert training.status == "processed" and training.object == "file"
    assert oai.files.retrieve(training.id).filename == "train.csv"
    assert training.id in {f.id for f in oai.files.list()}

    job = oai.fine_tuning.jobs.create(model="minilm", training_file=training.id, validation_file=validation.id,
                                      suffix="banking", seed=0,
                                      # batch 8: the short-data minimum of 200 steps costs 1,600 samples, not 6,400
                                      method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 8}}})
    assert job.status in ("queued", "validating_files", "running") and job.hyperparameters.n_epochs == 3
    deadline = time.time() + 900
    while job.status not in ("succeeded", "failed", "cancelled") and time.time() < deadline:
        time.sleep(1)
        job = oai.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", (job.error, server.tail())
    assert job.fine_tuned_model.startswith("ft:minilm:banking:")
    assert job.trained_tokens and job.trained_tokens > 0

    evs = list(oai.fine_tuning.jobs.list_events(job.id, limit=1000))
    messages = [e.message for e in evs]
    assert any("succeeded" in m for m in messages) and any(e.type == "metrics" for e in evs)
    first_page = oai.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(first_page.data) == 2 and first_page.has_more
    checkpoints = oai.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoints.data and checkpoints.data[0].step_number > 0

    listed = oai.fine_tuning.jobs.list(limit=10)
    assert job.id in {j.id for j in listed.data}
    assert job.fine_tuned_model in {m.id for m in oai.models.list()}
    assert oai.models.retrieve(job.fine_tuned_model).owned_by == tenant_a["tenant_id"]

    # Predictions from the tuned model through tunelab's predict endpoint.
    with open(test, newline="") as f:
        rows = list(csv.DictReader(f))[::8]
    r = httpx.post(f"{server.url}/api/v1/models/{job.fine_tuned_model}/predict", timeout=120,
                   headers={"Authorization": f"Bearer {tenant_a['api_key']}"},
                   json={"texts": [r["text"] for r in rows]})
    assert r.status_code == 200, r.text
    predicted = [p["label"] for p in r.json()["data"]]
    accuracy = sum(p == r["category"] for p, r in zip(predicted, rows)) / len(rows)
    assert accuracy >= 0.8, accuracy

    assert oai.models.delete(job.fine_tuned_model).deleted
    assert job.fine_tuned_model not in {m.id for m in oai.models.list()}


def test_openai_errors_have_openai_shape(oai, banking_subset):
    with pytest.raises(openai.NotFoundError) as e:
        oai.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    assert e.value.body["code"] == "not_found"
    with open(banking_subset[1], "rb") as f:
        training = oai.files.create(file=f, purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as e:       # unknown field: a clear 400
        oai.fine_tuning.jobs.create(model="minilm", training_file=training.id, extra_body={"bogus": 1})
    assert "bogus" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        oai.fine_tuning.jobs.create(model="minilm", training_file=training.id, method={"type": "dpo"})
    assert e.value.body["param"] == "method.type"
    with pytest.raises(openai.BadRequestError) as e:
        oai.fine_tuning.jobs.create(model="minilm", training_file=training.id,
                                    hyperparameters={"n_epochs": 2, "warp_factor": 9})
    assert "warp_factor" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.create(model="minilm", training_file="file-nope")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=oai.base_url, api_key="tl-0123456789.wrong", max_retries=0).models.list()
    deleted = oai.files.delete(training.id)
    assert deleted.deleted and training.id not in {f.id for f in oai.files.list()}


def test_cancel_through_openai(oai, client_a, banking_subset):
    with open(banking_subset[0], "rb") as f:
        training = oai.files.create(file=f, purpose="fine-tune")
    job = oai.fine_tuning.jobs.create(model="minilm", training_file=training.id, method={"type": "full"})
    cancelled = oai.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status in ("cancelled", "queued", "validating_files", "running")
    deadline = time.time() + 300
    while oai.fine_tuning.jobs.retrieve(job.id).status != "cancelled" and time.time() < deadline:
        time.sleep(0.5)
    assert oai.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert any(e["type"] == "status" and e["data"].get("to") == "cancelled" for e in events(client_a, job.id))
