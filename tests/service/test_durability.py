"""Jobs survive their worker: SIGKILL mid-training -> lease expires -> another worker resumes
from the checkpoint. Cancel stops with a final checkpoint. Idempotency keys. No retry for a
user's bad configuration."""

from __future__ import annotations

import signal
import threading
import time

import psutil
import pytest

from .helpers import events, upload, wait_job
from .server_proc import ServerProcess

FAST_LEASE = {"lease_seconds": 3, "heartbeat_seconds": 0.5, "worker_poll_seconds": 0.2}


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory, request):
    """No in-process worker: the tests start and kill `tunelab worker` processes themselves."""
    from .conftest import database_url

    home = tmp_path_factory.mktemp(f"durable-{backend}")
    srv = ServerProcess(home, database_url(backend, "durability"), worker=False, **FAST_LEASE).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def dataset(client_a, banking_subset) -> str:
    return upload(client_a, banking_subset[0])["id"]


def _wait_event(client, job_id, predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [e for e in events(client, job_id) if predicate(e)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no such event for {job_id}: {events(client, job_id)[-5:]}")


@pytest.mark.slow      # durability runs (real training, SIGKILL, lease expiry): `make test-slow`
def test_worker_sigkill_mid_training_resumes_from_checkpoint(server, client_a, dataset):
    worker = server.start_worker()
    # 280 train rows (400 less validation and test), batch 32: 9 steps an epoch; a checkpoint
    # every 3 steps, so the kill lands after a mid-epoch checkpoint.
    job = client_a.post("/api/v1/jobs", json={"dataset_id": dataset, "strategy": "full",
                                              "params": {"epochs": 2, "min_steps": 0, "checkpoint_every": 3}}).json()
    ckpt = _wait_event(client_a, job["id"], lambda e: e["type"] == "checkpoint")[0]["data"]["step"]
    children = psutil.Process(worker.pid).children(recursive=True)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    psutil.wait_procs(children, timeout=10)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), \
        "the job process must die with its worker"
    killed_at = max(e["data"]["step"] for e in events(client_a, job["id"], "checkpoint"))
    assert 0 < killed_at < 18

    server.start_worker()                      # the lease expires; the new worker takes the job
    done = wait_job(client_a, job["id"], timeout=600)
    assert done["status"] == "succeeded", (done, server.tail())
    assert done["attempts"] == 2
    evs = events(client_a, job["id"])
    requeued = [e for e in evs if e["type"] == "status" and e["data"].get("reason") == "lease_expired"]
    assert requeued, [e["message"] for e in evs if e["type"] == "status"]
    after = [e for e in evs if e["id"] > requeued[0]["id"] and e["type"] == "progress" and e["data"].get("phase") == "train"]
    assert f"resuming from checkpoint at step {killed_at}" in after[0]["message"], after[0]
    steps = [e["data"]["step"] for e in after if not e["message"]]
    assert steps[0] == killed_at + 1, steps[:5]          # continues, not from 0
    assert steps[-1] == after[-1]["data"]["total_steps"] == 18 and ckpt <= killed_at


@pytest.mark.slow_on_postgresql
def test_cancel_writes_a_final_checkpoint(server, client_a, dataset):
    if not any(w.poll() is None for w in server.workers):
        server.start_worker()
    job = client_a.post("/api/v1/jobs", json={"dataset_id": dataset, "strategy": "full",
                                              "params": {"epochs": 3, "min_steps": 0, "checkpoint_every": 1000}}).json()
    _wait_event(client_a, job["id"], lambda e: e["type"] == "progress" and e["data"].get("step", 0) >= 2)
    r = client_a.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"]
    done = wait_job(client_a, job["id"], timeout=120)
    assert done["status"] == "cancelled"
    checkpoints = events(client_a, job["id"], "checkpoint")
    assert checkpoints and checkpoints[-1]["data"]["step"] >= 2     # written on the way out
    assert client_a.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409


def test_idempotency_key_makes_one_job(client_a, dataset):
    body = {"dataset_id": dataset, "strategy": "zero-shot"}
    results = []

    def post():
        results.append(client_a.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "same-key-1"}).json())
    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["id"] for r in results}) == 1, results
    again = client_a.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "same-key-1"}).json()
    assert again["id"] == results[0]["id"]
    other = client_a.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "other-key"}).json()
    assert other["id"] != again["id"]


@pytest.mark.slow      # a real job that must fail once, never retried: `make test-slow`
def test_bad_configuration_fails_once_without_retry(server, client_a, dataset):
    if not any(w.poll() is None for w in server.workers):
        server.start_worker()
    job = client_a.post("/api/v1/jobs", json={"dataset_id": dataset, "strategy": "lora",
                                              "params": {"target_modules": ["no_such_module"]}}).json()
    done = wait_job(client_a, job["id"], timeout=300)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"]["code"] == "invalid_configuration"
    assert "no_such_module" in done["error"]["message"]


def test_invalid_job_is_refused_at_creation(client_a, dataset):
    cases = [({"dataset_id": dataset, "strategy": "warp-drive"}, 422, "strategy"),
             ({"dataset_id": dataset, "strategy": "lora", "params": {"epochs": 0}}, 422, "strategy"),
             ({"dataset_id": dataset, "strategy": "lora", "bogus": 1}, 422, "bogus"),
             ({"dataset_id": dataset, "strategy": "qlora"}, 422, "strategy"),
             ({"dataset_id": "file-nope", "strategy": "lora"}, 404, "dataset_id")]
    for body, status, param in cases:
        r = client_a.post("/api/v1/jobs", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["param"] == param, r.text


@pytest.mark.slow
def test_server_restart_loses_nothing(backend, tmp_path_factory, banking_subset):
    """The default install: server and worker in one process, SIGKILLed mid-job and started again."""
    from .conftest import database_url

    srv = ServerProcess(tmp_path_factory.mktemp("restart"), database_url(backend, "restart"), **FAST_LEASE).start()
    try:
        tenant = srv.create_tenant("solo")
        with srv.client(tenant["api_key"]) as c:
            ds = upload(c, banking_subset[0])["id"]
            job = c.post("/api/v1/jobs", json={"dataset_id": ds, "strategy": "lora",
                                               "params": {"epochs": 2, "min_steps": 0, "checkpoint_every": 3}}).json()
            _wait_event(c, job["id"], lambda e: e["type"] == "checkpoint")
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.start()
        with srv.client(tenant["api_key"]) as c:
            assert [d["id"] for d in c.get("/api/v1/datasets").json()["data"]] == [ds]
            done = wait_job(c, job["id"], timeout=600)
            assert done["status"] == "succeeded", (done, srv.tail())
            resumed = [e for e in events(c, job["id"], "progress") if "resuming from checkpoint" in e["message"]]
            assert resumed, "the restarted server's worker resumes from the checkpoint"
    finally:
        srv.stop()
