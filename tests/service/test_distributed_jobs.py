"""Data-parallel jobs through the real service: a job with `processes: 2` runs on two sandboxed
ranks (torch's elastic agent inside the job process), rank 0 alone reports; a rank killed with
SIGKILL has every rank restarted from the last checkpoint (or, past the restarts, fails the
job); either way no job process is left behind and the job is billed once. A strategy without a
training loop is refused (422)."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from .conftest import database_url
from .helpers import events, upload, wait_job
from .server_proc import ServerProcess

SQLITE_ONLY = True      # the job process and its ranks are the subject, not the database

# 120 Banking77 rows (10 intents): MiniLM `full`, global batch 16, 2 epochs of 6 steps, a
# checkpoint every 3 steps.
SPEC = {"strategy": "full", "processes": 2, "seed": 0, "limit": 120,
        "params": {"epochs": 2, "min_steps": 0, "batch_size": 16, "checkpoint_every": 3}}


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"ddp-{backend}")
    srv = ServerProcess(home, database_url(backend, "distributed_jobs"), heartbeat_seconds=0.5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def dataset(client_a, banking_subset) -> str:
    return upload(client_a, banking_subset[0])["id"]


def job_processes(job_id: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "tunelab.jobs.child" in cmd and job_id in cmd:
            found.append(p)
    return found


def ranks(job_id: str) -> dict[int, psutil.Process]:
    """The job's ranks by number (torchrun's RANK in their environment)."""
    out = {}
    for p in job_processes(job_id):
        try:
            env = p.environ()
        except psutil.Error:
            continue
        if "RANK" in env:
            out[int(env["RANK"])] = p
    return out


def no_processes_left(job_id: str, timeout: float = 15) -> list:
    deadline = time.time() + timeout
    while (left := job_processes(job_id)) and time.time() < deadline:
        time.sleep(0.2)
    return left


def billed_once(client, job_id: str) -> dict:
    detail = client.get(f"/api/v1/billing/jobs/{job_id}").json()
    charges = [c for c in detail["charges"] if c["kind"] == "charge"]
    assert detail["state"] == "settled" and detail["reserved"] == 0, detail
    assert sum(c["amount"] for c in charges) == detail["charged"]
    frontier = None
    for c in charges:            # advancing, disjoint step ranges: no step charged twice
        if frontier is not None:
            assert c["step_from"] >= frontier, charges
        frontier = max(frontier if frontier is not None else c["step_to"], c["step_to"])
    return detail


@pytest.fixture(scope="module")
def plain_run(client_a, dataset) -> dict:
    r = client_a.post("/api/v1/jobs", json={"dataset_id": dataset, **SPEC})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    seen = {}
    deadline = time.time() + 300
    while time.time() < deadline:       # both ranks seen running, under the job process (their agent)
        seen.update(ranks(job_id))
        if len(seen) == 2 or client_a.get(f"/api/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    return {"job": wait_job(client_a, job_id, timeout=600), "ranks": sorted(seen)}


def test_a_two_process_job_succeeds_with_rank_0_alone_reporting(server, client_a, plain_run):
    job = plain_run["job"]
    assert job["status"] == "succeeded", (job, server.tail())
    assert plain_run["ranks"] == [0, 1]
    assert events(client_a, job["id"], "checkpoint")
    steps = [e["data"]["step"] for e in events(client_a, job["id"], "progress")
             if e["data"].get("phase") == "train" and e["data"].get("samples_per_s") is not None]
    assert steps == list(range(1, 13)), f"12 global steps, each reported once (by rank 0): {steps}"
    assert job["fine_tuned_model"]
    billed_once(client_a, job["id"])
    assert not no_processes_left(job["id"])


def test_sigkill_of_one_rank_ends_the_job_cleanly_billed_once(server, client_a, dataset, plain_run):
    r = client_a.post("/api/v1/jobs", json={"dataset_id": dataset, **SPEC})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    deadline = time.time() + 300
    while not events(client_a, job_id, "checkpoint"):
        assert time.time() < deadline and client_a.get(f"/api/v1/jobs/{job_id}").json()["status"] not in \
            ("succeeded", "failed"), server.tail()
        time.sleep(0.1)
    victim = ranks(job_id).get(1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim.pid, signal.SIGKILL)
    job = wait_job(client_a, job_id, timeout=600)
    # settings.ddp_max_restarts (1): torchrun restarted both ranks, which went on from the checkpoint
    assert job["status"] == "succeeded", (job, server.tail())
    resumed = [e for e in events(client_a, job_id, "progress") if "resuming from checkpoint" in e["message"]]
    assert resumed, "the restarted ranks did not resume from the checkpoint"
    assert not no_processes_left(job_id), "job processes left behind"
    billed_once(client_a, job_id)


def test_a_strategy_without_a_training_loop_is_refused(client_a, dataset):
    r = client_a.post("/api/v1/jobs", json={"dataset_id": dataset, "strategy": "linear-probe", "processes": 2})
    assert r.status_code == 422, r.text
    assert "no training loop" in r.text
