"""Small helpers for service tests: upload, wait for a job."""

from __future__ import annotations

import time
from pathlib import Path

TERMINAL = {"succeeded", "failed", "cancelled"}


def upload(client, path: Path, **columns) -> dict:
    with open(path, "rb") as f:
        r = client.post("/api/v1/datasets", files={"file": (Path(path).name, f)}, data=columns)
    assert r.status_code == 201, r.text
    return r.json()


def wait_job(client, job_id: str, timeout: float = 600, until=TERMINAL) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")


def events(client, job_id: str, type_: str | None = None) -> list[dict]:
    params = {"limit": 5000} | ({"type": type_} if type_ else {})
    return client.get(f"/api/v1/jobs/{job_id}/events", params=params).json()["data"]


def stories_model(client, tmp: Path) -> str:
    """The pretrained stories260K (converted from the shared llama2.c checkpoint) uploaded as the
    tenant's own model: its `upload:` id."""
    import os
    import tarfile

    from tunelab.models.llama2c import import_llama2c

    shared = Path(os.environ.get("TUNELAB_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "datasets"
    source = shared / "models" / "stories260k-llama2c"
    folder = import_llama2c(source / "checkpoint_legacy.bin", source / "tok512.model", tmp / "stories260k")
    archive = tmp / "stories260k.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="stories260k")
    with open(archive, "rb") as f:
        r = client.post("/api/v1/models/import", files={"file": (archive.name, f)}, data={"name": "stories260k"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def identity_chat(tmp: Path) -> Path:
    """The shared identity set as OpenAI chat JSONL, its {{name}}/{{author}} placeholders filled."""
    import json
    import os

    shared = Path(os.environ.get("TUNELAB_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "datasets"
    path = tmp / "identity.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in json.loads((shared / "instruction" / "identity.json").read_text(encoding="utf-8")):
            fill = {k: v.replace("{{name}}", "Tuna").replace("{{author}}", "Tunelab") for k, v in r.items()}
            f.write(json.dumps({"messages": [{"role": "user", "content": fill["instruction"]},
                                             {"role": "assistant", "content": fill["output"]}]}) + "\n")
    return path
