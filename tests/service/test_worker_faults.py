"""Faults in the worker (issue 22, item 19): the disk under TUNELAB_HOME fills up while a job
runs, and a worker loses its lease mid-job.

A full disk fails the job at once with `disk_full` (a retry would fill it again), well before its
lease would have run out, and leaves nothing half-written: no decrypted inputs, no partial
checkpoint beyond the last complete one, no unsealed or half-sealed artifact. A worker stopped
(SIGSTOP) past its lease while another worker takes the job over records nothing when it wakes
up: the job ends with one result, the new owner's, and the books balance."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tunelab.jobs.diskfull import is_disk_full
from tunelab.jobs.jobdir import JobFolder

from .helpers import events, upload, wait_job
from .server_proc import TUNELAB, ServerProcess
from .test_faults import _mount_tmpfs, _umount

OPERATOR = "tl-operator-worker-faults"
LORA = {"strategy": "lora", "params": {"epochs": 2, "min_steps": 0, "checkpoint_every": 1}}


def _wait_event(client, job_id, predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [e for e in events(client, job_id) if predicate(e)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no such event for {job_id}: {events(client, job_id)[-5:]}")


def _fill(folder: Path, name: str = "filler") -> Path:
    """Write until the disk says ENOSPC: nothing is left free."""
    filler = folder / name
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def _leftovers(folder: Path) -> list[str]:
    """What a job's folder holds that a failed attempt must not leave behind."""
    bad = [n for n in ("inputs", "spec.json", "artifact", "artifact.tar.enc") if (folder / n).exists()]
    bad += [p.name for p in folder.iterdir() if p.name.startswith(".artifact")]
    ckpts = folder / "work" / "checkpoints"
    if ckpts.is_dir():
        bad += [f"work/checkpoints/{p.name}" for p in ckpts.iterdir() if p.name.startswith(".")]
        latest = ckpts / "LATEST"
        if latest.exists() and not (ckpts / latest.read_text().strip() / "state.json").is_file():
            bad.append("LATEST names no complete checkpoint")
    return bad


@pytest.mark.slow
# ---- a full disk under TUNELAB_HOME ---------------------------------------------------------------
def test_a_disk_that_fills_during_a_job_fails_it_at_once_and_keeps_nothing_half_written(tmp_path_factory,
                                                                                       banking_subset):
    base = tmp_path_factory.mktemp("worker-disk")
    home, logs = base / "home", base / "logs"
    home.mkdir()
    _mount_tmpfs(home, "64m")
    lease = 30.0
    try:
        # The database lives elsewhere: the subject is the job's files, not SQLite's.
        srv = ServerProcess(logs, f"sqlite:///{base / 'tunelab.db'}", lease_seconds=lease)
        srv.env["TUNELAB_HOME"] = str(home)
        srv.start()
        try:
            tenant = srv.create_tenant("full")
            with srv.client(tenant["api_key"]) as c:
                ds = upload(c, banking_subset[0])["id"]
                # 1. The disk fills up while the job trains: its next checkpoint finds no space.
                job = c.post("/api/v1/jobs", json={"dataset_id": ds, **LORA}).json()
                _wait_event(c, job["id"], lambda e: e["type"] == "checkpoint")
                filler, filled_at = _fill(home), time.monotonic()
                done = wait_job(c, job["id"], timeout=300)
                took = time.monotonic() - filled_at
                assert done["status"] == "failed", (done, srv.tail())
                assert done["error"]["code"] == "disk_full", done["error"]
                assert "TUNELAB_HOME" in done["error"]["message"] and "Free space" in done["error"]["message"]
                assert done["attempts"] == 1, "a full disk is not retried"
                assert took < lease, f"failed {took:.0f} s after the disk filled: not at once"
                print(f"\ndisk filled -> job failed in {took:.1f} s: {done['error']['message']}")
                folder = home / "jobs" / tenant["tenant_id"] / job["id"]
                assert _leftovers(folder) == [], _leftovers(folder)
                assert (folder / "work" / "checkpoints" / "LATEST").is_file(), "the last complete checkpoint stays"
                assert not [m for m in c.get("/api/v1/models").json()["data"] if m.get("job_id") == job["id"]]

                # 2. Full when the next job starts (what the first one half-wrote was freed: filled
                # again): the worker's own writes, the job's inputs, fail.
                more = _fill(home, "filler-2")
                second = c.post("/api/v1/jobs", json={"dataset_id": ds, **LORA}).json()
                t0 = time.monotonic()
                done = wait_job(c, second["id"], timeout=lease - 5)
                assert (done["status"], done["error"]["code"], done["attempts"]) == ("failed", "disk_full", 1), done
                assert "writing the job's input files" in done["error"]["message"]
                assert time.monotonic() - t0 < lease - 5
                folder = home / "jobs" / tenant["tenant_id"] / second["id"]
                assert not folder.exists() or _leftovers(folder) == [], _leftovers(folder)
                filler.unlink(), more.unlink()
        finally:
            srv.stop()
    finally:
        _umount(home)


def test_sealing_onto_a_full_disk_keeps_no_partial_file(tmp_path_factory):
    """The worker's own write of the sealed artifact: ENOSPC comes out as such (the worker then
    fails the job with disk_full), the half-sealed file is gone and the artifact folder untouched;
    discard_partial then removes what the attempt wrote and keeps the complete checkpoint."""
    from tunelab.security.storage import tenant_keys

    home = tmp_path_factory.mktemp("seal-full")
    _mount_tmpfs(home, "8m")
    try:
        tenant_keys.cache_clear()
        folder = JobFolder(home / "jobs" / "t1" / "job-1")
        (folder.path / "artifact").mkdir(parents=True)
        (folder.path / "artifact" / "model.bin").write_bytes(os.urandom(5 << 20))   # 5 of 8 MB: no room twice
        ckpts = folder.path / "work" / "checkpoints"
        (ckpts / "step-3").mkdir(parents=True)
        (ckpts / "step-3" / "state.json").write_text("{}")
        (ckpts / "LATEST").write_text("step-3")
        (ckpts / ".tmp-step-4-abc").mkdir()
        (ckpts / ".tmp-step-4-abc" / "model.safetensors").write_bytes(b"half")
        (folder.path / "inputs").mkdir()
        (folder.path / "spec.json").write_text("{}")
        with pytest.raises(OSError) as caught:
            folder.seal(home, "t1", ["artifact"])
        assert is_disk_full(caught.value), caught.value
        assert sorted(p.name for p in folder.path.iterdir()) == ["artifact", "inputs", "spec.json", "work"]
        assert (folder.path / "artifact" / "model.bin").stat().st_size == 5 << 20
        folder.discard_partial()
        assert sorted(p.name for p in folder.path.iterdir()) == ["work"]
        assert sorted(p.name for p in ckpts.iterdir()) == ["LATEST", "step-3"]
    finally:
        tenant_keys.cache_clear()
        _umount(home)


# ---- a worker that loses its lease mid-job --------------------------------------------------------
def _worker(srv: ServerProcess, name: str) -> subprocess.Popen:
    """A `tunelab worker` with its own log: what each of the two did is told apart."""
    log = open(srv.home / f"worker-{name}.log", "ab")
    proc = subprocess.Popen([*TUNELAB, "worker"], env=srv.env, stdout=log, stderr=subprocess.STDOUT)
    srv.workers.append(proc)
    return proc


def _gone(procs: list[psutil.Process]) -> bool:
    alive = []
    for p in procs:
        try:
            alive.append(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            pass
    return not any(alive)


@pytest.mark.slow
@pytest.mark.slow_on_postgresql
def test_a_worker_that_lost_its_lease_records_nothing(backend, tmp_path_factory, banking_subset):
    from .conftest import database_url

    srv = ServerProcess(tmp_path_factory.mktemp(f"lease-{backend}"), database_url(backend, "worker_faults"),
                        worker=False, operator_api_key=OPERATOR, lease_seconds=3, heartbeat_seconds=0.5,
                        worker_poll_seconds=0.2).start()
    try:
        tenant = srv.create_tenant("lease")
        with srv.client(tenant["api_key"]) as c, srv.client(OPERATOR) as op:
            ds = upload(c, banking_subset[0])["id"]
            a = _worker(srv, "a")
            job = c.post("/api/v1/jobs", json={"dataset_id": ds, "strategy": "lora", "limit": 150,
                                               "params": {"epochs": 2, "min_steps": 0, "checkpoint_every": 1000}})
            assert job.status_code == 201, job.text
            job = job.json()
            # A is stopped near the end of its run; its job process is not, and finishes meanwhile
            # (before B starts: two job processes at once in one job folder is not the subject).
            _wait_event(c, job["id"], lambda e: e["type"] == "progress" and e["data"].get("phase") == "train"
                        and e["data"].get("step", 0) >= e["data"].get("total_steps", 99) - 3)
            children = psutil.Process(a.pid).children(recursive=True)
            a.send_signal(signal.SIGSTOP)
            try:
                deadline = time.time() + 300
                while not _gone(children) and time.time() < deadline:
                    time.sleep(0.2)
                assert _gone(children), "A's job process finished while A was stopped"
                b = _worker(srv, "b")          # takes the job, A's lease (3 s) having run out
                requeued = _wait_event(c, job["id"], lambda e: e["type"] == "status"
                                       and e["data"].get("reason") == "lease_expired")[0]["id"]
                _wait_event(c, job["id"], lambda e: e["id"] > requeued and e["type"] == "status"
                            and e["data"].get("to") == "running")          # B's own attempt is training
                assert c.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "running"     # B is still at work
            finally:
                a.send_signal(signal.SIGCONT)     # A wakes up with a finished job it no longer owns
            done = wait_job(c, job["id"], timeout=600)
            assert done["status"] == "succeeded" and done["attempts"] == 2, (done, srv.tail())
            statuses = [e["data"].get("to") for e in events(c, job["id"], "status")]
            assert statuses.count("succeeded") == 1 and statuses[-1] == "succeeded", statuses

            log_a = (srv.home / "worker-a.log").read_text(errors="replace")
            log_b = (srv.home / "worker-b.log").read_text(errors="replace")
            assert "lost the lease" in log_a and "job succeeded" not in log_a, log_a[-3000:]
            assert "job succeeded" in log_b and "lost the lease" not in log_b, log_b[-3000:]
            models = [m for m in c.get("/api/v1/models").json()["data"] if m.get("job_id") == job["id"]]
            assert [m["id"] for m in models] == [done["fine_tuned_model"]], models
            assert a.poll() is None and b.poll() is None, "both workers live on"

            bill = c.get(f"/api/v1/billing/jobs/{job['id']}").json()
            assert bill["state"] == "settled" and bill["reserved"] == 0, bill
            books = op.get("/api/v1/admin/billing/reconcile").json()
            assert books["ok"], books
    finally:
        srv.stop()
