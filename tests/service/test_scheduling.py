"""Devices and the fair queue through the real service: jobs created with the API, claimed by a
real Worker (in this process) whose job processes are a short stand-in (it says it runs, holds
its devices a while, leaves an artifact and a result), with fake GPUs declared
(TUNELAB_WORKER_GPUS): one GPU and two slots run two GPU jobs one after the other; a tenant over
its `gpus` quota is queued (not refused), says why, and runs once its other job ends; one
tenant's queue does not starve another's job; the API shows where each job ran."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx

import pytest

from tunelab.billing import quotas
from tunelab.db import Database
from tunelab.jobs.executors import LocalExecutor
from tunelab.jobs.worker import Worker
from tunelab.sdk import Client
from tunelab.settings import Settings

from .helpers import events, upload, wait_job
from .server_proc import TUNELAB, ServerProcess

SQLITE_ONLY = True      # the claim's PostgreSQL lock is covered by test_db_backends' claims
HOLD_S = 1.0            # how long a stand-in job holds its devices
STAND_IN = """
import json, os, sys, time
print(json.dumps({"type": "phase", "phase": "running", "train_rows": 1, "validation_rows": 1, "test_rows": 1}), flush=True)
time.sleep(float(sys.argv[1]))
os.makedirs("artifact", exist_ok=True)
with open("artifact/model.txt", "w") as f:
    f.write("stand-in")
print(json.dumps({"type": "result", "strategy": "linear-probe", "metrics": {}}), flush=True)
"""


class _Timed:
    """An execution that notes when its process ended."""

    def __init__(self, inner, run: dict):
        self._inner, self._run = inner, run

    def poll(self):
        code = self._inner.poll()
        if code is not None and "end" not in self._run:
            self._run["end"] = time.monotonic()
        return code

    def __getattr__(self, name):
        return getattr(self._inner, name)


class StandIn:
    """The executor: records what each job was handed (its env, GPUs, CPUs) and when it ran."""
    name = "stand-in"

    def __init__(self):
        self.runs: list[dict] = []

    def start(self, spec_path, job_dir, env, *, readable=(), writable=(), gpus=0, program=None, cpus=None):
        run = {"job": job_dir.name, "gpus": gpus, "cpus": cpus, "start": time.monotonic(),
               "env": {k: env.get(k) for k in ("CUDA_VISIBLE_DEVICES", "TUNELAB_JOB_CPUS", "OMP_NUM_THREADS")}}
        self.runs.append(run)
        inner = LocalExecutor().start(spec_path, job_dir, env, program=[sys.executable, "-c", STAND_IN, str(HOLD_S)])
        return _Timed(inner, run)

    def run_of(self, job_id: str) -> dict:
        return next(r for r in self.runs if r["job"] == job_id)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("sched"), worker=False).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def db(server):
    database = Database(Settings(home=server.home).db_url)
    yield database
    database.engine.dispose()


@pytest.fixture(scope="module")
def tenants(server, banking_subset):
    """Four tenants, each with its client and a processed dataset."""
    out = {}
    for name in ("a", "b", "c", "d"):
        t = server.create_tenant(f"sched-{name}", f"{name}@sched.test")
        client = server.client(t["api_key"])
        out[name] = {"id": t["tenant_id"], "client": client, "ds": upload(client, banking_subset[0])["id"]}
    yield out
    for t in out.values():
        t["client"].close()


@contextmanager
def worker(server, db, **settings):
    """A real worker with the stand-in executor, running until the block ends (its jobs finish)."""
    executor = StandIn()
    w = Worker(Settings(home=server.home, worker_poll_seconds=0.1, heartbeat_seconds=0.5, **settings), db, executor)
    thread = threading.Thread(target=w.run_forever, daemon=True)
    thread.start()
    try:
        yield w, executor
    finally:
        w.stopping.set()
        thread.join(timeout=60)


def create(tenant: dict, **extra) -> str:
    r = tenant["client"].post("/api/v1/jobs", json={"dataset_id": tenant["ds"], "strategy": "linear-probe", **extra})
    assert r.status_code == 201, r.text        # queued, never refused for devices or the gpus quota
    return r.json()["id"]


def cancel_queued(tenant: dict, job_ids: list[str]) -> None:
    for job_id in job_ids:
        tenant["client"].post(f"/api/v1/jobs/{job_id}/cancel")


def wait_events(tenant: dict, job_id: str, text: str, timeout: float = 30) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [e for e in events(tenant["client"], job_id) if text in e["message"]]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no event with {text!r} on {job_id}: {events(tenant['client'], job_id)}")


def _signed_in(server, key: str):
    """A browser-like client of the web pages, signed in with the tenant's API key."""
    web = httpx.Client(base_url=server.url, timeout=60, follow_redirects=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").text).group(1)
    r = web.post("/login", data={"method": "key", "api_key": key, "csrf_token": token, "next": "/jobs"})
    assert r.status_code == 200 and "/login" not in str(r.url), r.text[:500]
    return web


def test_one_gpu_runs_two_gpu_jobs_one_after_the_other(server, db, tenants):
    a = tenants["a"]
    with db.session() as s:        # the worker's one GPU holds the second job back, not the quota
        quotas.set_limits(s, a["id"], {"gpus": 4})
    first, second = create(a), create(a)
    with worker(server, db, worker_gpus="1", worker_max_jobs=2) as (w, runs):
        assert w.devices.max_jobs == 2 and len(w.devices.inv.gpus) == 1
        done = [wait_job(a["client"], j, timeout=120) for j in (first, second)]
    assert [j["status"] for j in done] == ["succeeded", "succeeded"], done
    one, two = runs.run_of(first), runs.run_of(second)
    assert one["end"] <= two["start"], "the second GPU job started while the first held the only GPU"
    for run in (one, two):
        assert run["gpus"] == 1 and run["env"]["CUDA_VISIBLE_DEVICES"] == "0"
        assert run["env"]["TUNELAB_JOB_CPUS"] == str(run["cpus"])
    # why it waited, said on the job while it waited
    wait_events(a, second, "Waiting for a GPU: it needs 1 and 0 of this worker's 1 are free")
    # where each ran, in the API
    for job in done:
        placed = job["placement"]
        assert placed["devices"] == ["gpu:0"] and placed["processes"] == 1, placed
        assert placed["executor"] == "stand-in" and placed["node"] and placed["worker"] == w.id
        assert placed["threads_per_process"] >= 1
    assert wait_events(a, first, "Runs on ")[0]["data"]["placement"]["devices"] == ["gpu:0"]


def test_a_tenant_over_its_gpus_quota_is_queued_and_says_why(server, db, tenants):
    c = tenants["c"]
    with db.session() as s:
        quotas.set_limits(s, c["id"], {"gpus": 1})
    first, second = create(c), create(c)
    with worker(server, db, worker_gpus="24000,24000", worker_max_jobs=2) as (w, runs):
        wait_job(c["client"], first, timeout=60, until={"validating", "running", "succeeded"})
        waiting = wait_events(c, second, "Waiting for a GPU: your quota is 1 and 1 is in use")
        assert waiting[0]["data"]["waiting"].startswith("waiting for a GPU: your quota is 1")
        web = _signed_in(server, c["client"].headers["Authorization"].removeprefix("Bearer "))
        page = web.get(f"/jobs/{second}").text
        web.close()
        job = c["client"].get(f"/api/v1/jobs/{second}").json()
        if job["status"] == "queued":       # its progress (and its page) say why while it waits
            assert job["progress"]["phase"] == "waiting", job
            assert "your quota is 1 and 1 is in use" in page
        done = [wait_job(c["client"], j, timeout=120) for j in (first, second)]
    assert [j["status"] for j in done] == ["succeeded", "succeeded"], done
    one, two = runs.run_of(first), runs.run_of(second)
    assert one["end"] <= two["start"], "the tenant ran two GPUs with a quota of one"
    # the worker had a free GPU: only the quota held the second back; once it ran, no waiting note
    assert done[1]["progress"].get("phase") != "waiting"


def test_over_the_gpus_quota_a_job_is_admitted_unless_it_alone_needs_more(db, tenants, monkeypatch):
    import tunelab.billing.devices as billing_devices

    monkeypatch.setattr(billing_devices, "detect", lambda: ("gpu:h100", 1))
    c = tenants["c"]
    with db.session() as s:
        quotas.set_limits(s, c["id"], {"gpus": 1})
        quotas.check_job(s, c["id"], {"strategy": "linear-probe"})        # queued even with its GPU busy
        with pytest.raises(quotas.QuotaExceeded, match="gpus"):
            quotas.check_job(s, c["id"], {"strategy": "lora", "processes": 2})
        assert quotas.gpus_of({"strategy": "lora", "processes": 3}) == 3
        assert quotas.gpus_of({"strategy": "lora", "processes": 3}, device="cpu") == 0


def test_one_tenants_queue_does_not_starve_another(server, db, tenants):
    d, b = tenants["d"], tenants["b"]           # neither has run anything yet
    many = [create(d) for _ in range(5)]
    time.sleep(0.05)
    one = create(b)
    with worker(server, db) as (w, runs):         # a CPU worker: one job at a time, as before
        assert w.devices.max_jobs == 1 and not w.devices.inv.gpus
        wait_job(b["client"], one, timeout=120)
        w.stopping.set()
    order = [r["job"] for r in runs.runs]
    # d's oldest first (both waited as long; d's job is older), then b's: d was served last
    assert order[:2] == [many[0], one], f"tenant b's job ran {order.index(one) + 1}th: {order}"
    cancel_queued(d, many)


def test_the_job_page_says_where_it_ran_and_the_wizard_asks_for_processes(server, tenants):
    from tunelab.strategies import available, get_strategy

    a = tenants["a"]
    ran = next(j for j in a["client"].get("/api/v1/jobs").json()["data"] if j.get("placement"))
    web = _signed_in(server, a["client"].headers["Authorization"].removeprefix("Bearer "))
    try:
        page = web.get(f"/jobs/{ran['id']}").text
        assert "data-placement" in page and "Ran on " in page and "gpu:0, 1 process" in page, page[:3000]
        wizard = web.get("/train", params={"dataset": a["ds"], "strategy": "linear-probe"}).text
        assert 'name="processes"' not in wizard          # no training loop to spread
        spread = [n for n in available() if getattr(get_strategy(n), "distributed", False)]
        if "lora" in spread:        # the strategies' `distributed` flag (issue 20, H1) has landed
            wizard = web.get("/train", params={"dataset": a["ds"], "strategy": "lora"}).text
            assert 'name="processes"' in wizard
    finally:
        web.close()


def test_the_sdk_and_the_remote_cli_take_processes(server, tenants):
    """Last in this module: its jobs are cancelled before any worker could take them."""

    d = tenants["d"]
    key = d["client"].headers["Authorization"].removeprefix("Bearer ")
    with Client(server.url, key) as sdk:
        job = sdk.jobs.create(d["ds"], strategy="lora", processes=2)
        assert job.spec["processes"] == 2 and job.placement is None
        sdk.jobs.cancel(job.id)
    env = {**server.env, "TUNELAB_SERVER": server.url, "TUNELAB_API_KEY": key}
    r = subprocess.run([*TUNELAB, "jobs", "create", d["ds"], "--strategy", "lora", "--processes", "2", "--json"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["spec"]["processes"] == 2
    cancel_queued(d, [created["id"]])
