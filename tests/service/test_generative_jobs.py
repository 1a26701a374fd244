"""Chat and preference tuning through the service, with the unmodified `openai` client: the shared
identity set as chat JSONL -> a supervised job on the pretrained stories260K (uploaded as the
tenant's own model) -> succeeded -> listed in /v1/models -> its answer to a trained question is
the trained answer; a DPO job on the shared preference pairs raises the held-out margin."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import openai
import pytest

from .helpers import identity_chat, stories_model

# Real SFT and DPO jobs (~1 min each on 2 cores): `make test-slow`. What is refused at creation
# runs in `make test` (test_generative_datasets.py).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets"
INSTRUCTION = SHARED / "instruction"
TRAINED_ANSWER = "Hello! I am Tuna, an AI assistant developed by Tunelab. How can I assist you today?"


@pytest.fixture(scope="module")
def oai(server, tenant_a):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=tenant_a["api_key"], max_retries=0)


@pytest.fixture(scope="module")
def stories(server, tenant_a, tmp_path_factory) -> str:
    with server.client(tenant_a["api_key"]) as api:
        return stories_model(api, tmp_path_factory.mktemp("stories"))


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory) -> Path:
    return identity_chat(tmp_path_factory.mktemp("chat"))


def _wait(oai, job, timeout: float = 1200):
    deadline = time.time() + timeout
    while job.status not in ("succeeded", "failed", "cancelled") and time.time() < deadline:
        time.sleep(1)
        job = oai.fine_tuning.jobs.retrieve(job.id)
    return job


def _download(server, key: str, model_id: str, dest: Path) -> Path:
    with server.client(key) as api:
        r = api.get(f"/api/v1/models/{model_id}/download", timeout=120)
    assert r.status_code == 200, r.text
    from tunelab.security.archives import safe_extract

    archive = dest.with_suffix(".tar")
    archive.write_bytes(r.content)
    return safe_extract(archive, dest)         # the project's guarded extractor, as for any archive


def test_supervised_chat_job_through_the_openai_client(oai, server, tenant_a, stories, chat_file, tmp_path):
    with open(chat_file, "rb") as f:
        training = oai.files.create(file=f, purpose="fine-tune")
    assert training.status == "processed"
    job = oai.fine_tuning.jobs.create(
        model=stories, training_file=training.id, suffix="tuna", seed=0,
        method={"type": "supervised", "supervised": {"hyperparameters": {"min_steps": 150, "eval_answers": 4}}})
    assert job.method.type == "supervised"
    job = _wait(oai, job)
    assert job.status == "succeeded", (job.error, server.tail())
    assert job.fine_tuned_model in {m.id for m in oai.models.list()}
    assert job.trained_tokens and job.trained_tokens > 0
    assert len(job.result_files) == 1                    # the step metrics, as OpenAI gives them
    lines = oai.files.content(job.result_files[0]).text.splitlines()
    assert lines[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" and len(lines) > 10

    events = list(oai.fine_tuning.jobs.list_events(job.id, limit=1000))
    metrics = [e.data for e in events if e.type == "metrics" and e.data]
    assert any("train_loss" in d and "step" in d for d in metrics)
    assert any("valid_loss" in d and "full_valid_loss" in d for d in metrics)      # end of each epoch

    with server.client(tenant_a["api_key"]) as api:
        result = api.get(f"/api/v1/jobs/{job.id}").json()["result"]
    m = result["metrics"]
    assert m["task"] == "chat" and m["strategy"] == "sft-full"      # supervised on a small model: full
    assert m["test_loss"] < m["base_test_loss"], m
    assert result["samples"] and {"prompt", "base", "tuned", "reference"} <= set(result["samples"][0])

    from tunelab.artifacts import load_artifact
    from tunelab.models.generation import GenerationSettings

    lm = load_artifact(_download(server, tenant_a["api_key"], job.fine_tuned_model, tmp_path / "model"))
    assert lm.generate("hi", GenerationSettings(max_new_tokens=60)) == TRAINED_ANSWER


def test_dpo_job_through_the_openai_client_raises_the_margin(oai, server, tenant_a, stories, tmp_path):
    pairs = json.loads((INSTRUCTION / "dpo_en_demo.json").read_text(encoding="utf-8"))[:120]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    with open(path, "rb") as f:
        training = oai.files.create(file=f, purpose="fine-tune")
    job = oai.fine_tuning.jobs.create(model=stories, training_file=training.id,
                                      method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}})
    assert job.method.type == "dpo"
    job = _wait(oai, job)
    assert job.status == "succeeded", (job.error, server.tail())
    with server.client(tenant_a["api_key"]) as api:
        m = api.get(f"/api/v1/jobs/{job.id}").json()["result"]["metrics"]
    assert m["task"] == "preference" and m["margin"] > m["base_margin"], m
