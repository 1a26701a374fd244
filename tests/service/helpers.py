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
