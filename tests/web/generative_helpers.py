"""Helpers of the generative web tests: the pretrained stories260K as an uploadable model archive,
the shared instruction data, a signed-in httpx client, and a chat/preference dataset row (uploaded
through the API when the service takes the file, stored directly otherwise)."""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets"
STORIES = SHARED / "models" / "stories260k-llama2c"
INSTRUCTION = SHARED / "instruction"


def stories_archive(tmp: Path) -> Path:
    """stories260K converted from the shared llama2.c checkpoint, as a .tar.gz of its folder."""
    from tunelab.models.llama2c import import_llama2c

    folder = import_llama2c(STORIES / "checkpoint_legacy.bin", STORIES / "tok512.model", tmp / "stories260k")
    archive = tmp / "stories260k.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="stories260k")
    return archive


def identity_file(tmp: Path, rows: int | None = None) -> Path:
    """identity.json (alpaca records) with {{name}} / {{author}} filled in."""
    records = json.loads((INSTRUCTION / "identity.json").read_text(encoding="utf-8"))[:rows]
    for r in records:
        for k, v in r.items():
            r[k] = v.replace("{{name}}", "Tuna").replace("{{author}}", "Tunelab")
    path = tmp / "identity.json"
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def preference_file(tmp: Path, rows: int = 40) -> Path:
    records = json.loads((INSTRUCTION / "dpo_en_demo.json").read_text(encoding="utf-8"))[:rows]
    path = tmp / "dpo_small.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def signed_in(url: str, api_key: str) -> tuple[httpx.Client, str]:
    """An httpx client with a browser session (the sign-in form), and the session's CSRF token."""
    c = httpx.Client(base_url=url, follow_redirects=False, timeout=300)
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
    r = c.post("/login", data={"method": "key", "api_key": api_key, "csrf_token": token})
    assert r.status_code == 303, r.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/settings").text).group(1)
    return c, csrf


def upload_model(srv, api_key: str, archive: Path, name: str = "stories260k") -> dict:
    with srv.client(api_key) as api, open(archive, "rb") as f:
        r = api.post("/api/v1/models/import", files={"file": (archive.name, f)}, data={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def generative_dataset(srv, tenant: dict, path: Path, task: str) -> str:
    """A processed dataset of `task` ("chat" | "preference"): uploaded through the API when the
    service takes the file as that task; otherwise stored directly (the upload path for
    generative files lands separately), with the report and stats an upload would give."""
    with srv.client(tenant["api_key"]) as api, open(path, "rb") as f:
        r = api.post("/api/v1/datasets", files={"file": (path.name, f)})
    if r.status_code == 201:
        row = api_row = r.json()
        with srv.client(tenant["api_key"]) as api:
            row = api.get(f"/api/v1/datasets/{api_row['id']}").json()
        if (row.get("report") or {}).get("task", row.get("task")) == task:
            return row["id"]
    return store_directly(srv.home, tenant["tenant_id"], path, task)


def store_directly(home: Path, tenant_id: str, path: Path, task: str) -> str:
    from tunelab.data.generative_checks import validate_generative
    from tunelab.db.engine import Database
    from tunelab.db.models import Dataset
    from tunelab.db.scoped import TenantScope
    from tunelab.security.storage import dataset_store

    stored = dataset_store(home, tenant_id).import_generative(path)
    ds = stored.load_generative()
    report = validate_generative(ds).to_dict()
    db = Database(f"sqlite:///{home / 'tunelab.db'}")
    try:
        with db.session() as s:
            row = TenantScope(s, tenant_id).add(Dataset(
                filename=path.name, bytes=path.stat().st_size, sha256=stored.sha256, status="processed",
                rows=len(ds), report={k: v for k, v in report.items() if k != "stats"} | {"task": task,
                                                                                         "format": ds.format},
                stats=report["stats"]["train"]))
            return row.id
    finally:
        db.engine.dispose()


CHAT_METRICS = {"task": "chat", "strategy": "sft-full", "test_rows": 9, "test_loss": 2.5, "base_test_loss": 6.1,
                "test_perplexity": 12.18, "base_test_perplexity": 445.9, "exact_match": 0.25, "token_f1": 0.61,
                "answers_scored": 4, "base_exact_match_on_samples": 0.0, "train_seconds": 42.0,
                "tokens_per_second": 900.0, "trainable_params": 260_000, "peak_rss_mb": 900.0}
SAMPLES = [{"prompt": f"Who are you? ({i})", "reference": "I am Tuna, an AI assistant developed by Tunelab.",
            "base": "Once upon a time, there was a little girl", "tuned": "I am Tuna, an AI assistant."}
           for i in range(4)]


def finished_chat_run(home: Path, tenant_id: str, base_folder: Path, dataset_id: str, model: str,
                      strategy: str = "sft-full", metrics: dict | None = None, group: str | None = None) -> dict:
    """A finished generative run as the worker leaves one: a sealed model folder under the jobs
    directory (the base weights, untuned: what matters here is the serving path), the job with its
    result (metrics, sample answers), its progress events and its tuned-model row."""
    from tunelab.artifacts.store import write_artifact
    from tunelab.db.engine import Database
    from tunelab.db.models import Job, JobEvent, TunedModel, utcnow
    from tunelab.db.scoped import TenantScope
    from tunelab.jobs.spec import JobSpec
    from tunelab.models.causal import load_causal_lm, load_chat_tokenizer
    from tunelab.models.lm_predictors import CausalLMModel
    from tunelab.security.storage import seal_folder

    metrics = {**CHAT_METRICS, "strategy": strategy, **(metrics or {})}
    meta = {"compare_group": group} if group else {}
    spec = JobSpec(kind="train", dataset_id=dataset_id, model=model, strategy=strategy, metadata=meta)
    db = Database(f"sqlite:///{home / 'tunelab.db'}")
    try:
        with db.session() as s:
            scope = TenantScope(s, tenant_id)
            job = scope.add(Job(kind="train", status="succeeded", spec=spec.model_dump(mode="json"),
                                started_at=utcnow(), finished_at=utcnow()))
            lm = CausalLMModel(load_causal_lm(base_folder), load_chat_tokenizer(base_folder), str(base_folder),
                               max_length=256)
            folder = write_artifact(home / "jobs" / tenant_id / job.id / "artifact", lm,
                                    config={"strategy": strategy, "task": "chat"}, metrics=metrics,
                                    data_report={}, card="# A chat model\n\nsample answers, base against tuned\n")
            sealed = seal_folder(home, tenant_id, folder)
            model_id = f"ft:{model}:{tenant_id}:{strategy}:{job.id[-12:]}"
            scope.add(TunedModel(id=model_id, job_id=job.id, base_model=model, strategy=strategy,
                                 artifact_path=str(sealed), metrics=metrics))
            job.result = {"kind": "train", "strategy": strategy, "metrics": metrics, "samples": SAMPLES,
                          "artifacts": {strategy: str(sealed)}, "models": {strategy: model_id}}
            job.fine_tuned_model = model_id
            for step in range(1, 11):
                data = {"phase": "train", "step": step, "total_steps": 10, "loss": 6.0 - step / 2}
                if step % 5 == 0:
                    data["eval_metric"] = -(5.0 - step / 4)          # a causal LM's loop: minus the val loss
                scope.add(JobEvent(job_id=job.id, type="progress", data=data))
            return {"job": job.id, "model": model_id}
    finally:
        db.engine.dispose()
