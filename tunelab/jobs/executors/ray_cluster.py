"""Jobs on a Ray cluster: the worker stays the one process with the database; each job becomes an
actor (ray_node.JobRunner) holding the job's CPUs and GPUs on the node Ray places it on, and runs
there inside the job sandbox.

Only Ray Core is used (actors and their method calls over the cluster's authenticated channels):
never the Jobs API nor the dashboard, which run arbitrary commands for whoever reaches them
(ShadowRay, CVE-2023-48022). The cluster is started with token authentication (ray_setup.py).

A job's processes all run on one node: the sandbox has no network, so ranks on two nodes could
not talk; a job that needs more than the largest node has is refused with a message that says
so (its data-parallel ranks are started by the job process itself, jobs/child.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import secrets
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from ...security.safe_fs import open_append
from .base import drain
from .ray_node import CHUNK, JOB, READABLE, STREAM_IN, STREAM_OUT, JobPlan, JobRunner, add_regular_tree, \
    extract_regular, stream_cipher

log = logging.getLogger("tunelab.worker")

EXIT_CONFIG, EXIT_STOPPED = 4, 5     # jobs/child.py's: the user's configuration (not retried); stopped
EXIT_INFRA, EXIT_KILLED = 1, -9
# Passed on to the job on the node: what the sandbox passes in anyway (sandbox._PASS_ENV), with
# the worker's values; everything else of the worker's environment stays on the worker.
_NODE_ENV = ("LANG", "LC_ALL", "TOKENIZERS_PARALLELISM", "TUNELAB_MAX_UPLOAD_MB", "TUNELAB_MAX_ROWS",
             "TUNELAB_CATALOG", "TUNELAB_SHARED_MODELS", "TUNELAB_DDP_MAX_RESTARTS", "MKL_NUM_THREADS")
WAITING_NOTE_AFTER_S = 5.0


class RayExecutor:
    """Executor protocol (base.py) over a Ray cluster the worker is connected to (ray_setup.connect)."""
    name = "ray"
    places_jobs = True        # the nodes hold the devices and Ray queues for them (jobs/devices.py)

    def __init__(self, *, limits=None, insecure: bool = False, shared_models: Path | None = None,
                 poll_seconds: float = 0.2):
        from .sandbox import Limits

        self.limits = limits or Limits.from_settings()
        self.insecure, self.poll_seconds = insecure, poll_seconds
        self.shared_models = Path(shared_models).resolve() if shared_models else None

    def start(self, spec_path: Path, job_dir: Path, env: dict[str, str], *, readable=(), writable=(),
              gpus: int = 0, program: list[str] | None = None, cpus: int | None = None) -> "RayExecution":
        """writable (the tenant's runtime folder on the worker) is not shipped: the job gets a fresh
        home on the node, removed with it."""
        processes = _processes_of(spec_path)
        try:
            refusal, granted = self.fit(processes, cpus, gpus)
        except Exception as exc:          # the cluster is down or unreachable: an infrastructure failure
            return RayExecution.refused(job_dir, f"The Ray cluster cannot be reached: {type(exc).__name__}: "
                                        f"{str(exc)[:300]}", code="cluster_unreachable", status=EXIT_INFRA)
        if refusal:
            return RayExecution.refused(job_dir, refusal)
        shipped, kept = self._split_readable(readable, job_dir)
        plan = JobPlan(tag=Path(job_dir).name, job_dir=str(job_dir), readable=[str(p) for p in shipped],
                       kept_readable=[str(p) for p in kept], env={k: env[k] for k in _NODE_ENV if k in env},
                       program=list(program) if program else None, gpus=gpus, cpus=granted, processes=processes,
                       limits=dataclasses.asdict(self.limits), insecure=self.insecure)
        return RayExecution(plan, Path(job_dir), shipped, self.poll_seconds)

    def fit(self, processes: int, cpus: int | None, gpus: int) -> tuple[str | None, int]:
        """(why the job cannot run on any node, or None; the CPUs to ask). The worker's `cpus` is
        a wish (its own machine's count); a job needs at least one CPU per process."""
        import ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        most_cpus = int(max((r.get("CPU", 0) for r in nodes), default=0))
        most_gpus = int(max((r.get("GPU", 0) for r in nodes), default=0))
        need = max(1, processes)
        fits = [r for r in nodes if r.get("CPU", 0) >= need and r.get("GPU", 0) >= gpus]
        if not fits:
            return (f"The job needs {processes} process(es) with {need} CPU(s)"
                    + (f" and {gpus} GPU(s)" if gpus else "") + f" on one node, but the Ray cluster's largest "
                    f"node has {most_cpus} CPU(s) and {most_gpus} GPU(s). A job's processes all run on one node, "
                    "inside its sandbox, which has no network: they cannot be spread over nodes. Lower "
                    f"`processes` to at most {max(1, most_cpus if not gpus else min(most_cpus, most_gpus))}, or "
                    "add a node that large to the cluster."), 0
        largest = int(max(r.get("CPU", 0) for r in fits))
        return None, max(need, min(cpus or need, largest))

    def _split_readable(self, readable, job_dir: Path) -> tuple[list[Path], list[Path]]:
        """Inputs outside the job folder (an uploaded model) travel with the job; the shared models
        folder (public pretrained weights) must be at the same path on every node instead."""
        shipped, kept = [], []
        for path in map(Path, readable):
            resolved = path.resolve()
            if resolved.is_relative_to(Path(job_dir).resolve()):
                continue                  # already in the job folder's payload
            if self.shared_models and resolved.is_relative_to(self.shared_models):
                kept.append(path)
            else:
                shipped.append(path)
        return shipped, kept


class _StoppedWaiting(Exception):
    """Stopped while waiting for a node."""


_RUNNER = None


def _runner_class():
    global _RUNNER
    if _RUNNER is None:
        import ray

        _RUNNER = ray.remote(JobRunner)
    return _RUNNER


def _processes_of(spec_path: Path) -> int:
    try:
        job = json.loads(Path(spec_path).read_text()).get("job") or {}
        return max(1, int(job.get("processes") or 1))
    except (OSError, ValueError, TypeError):
        return 1                          # a probe or a server without a job spec


class RayExecution:
    """Execution protocol (base.py): a thread drives the remote runner; poll() returns the exit
    status only once the job's outputs are back in the local job folder."""

    def __init__(self, plan: JobPlan | None, job_dir: Path, shipped: list[Path], poll_seconds: float):
        self.plan, self.job_dir, self.shipped, self.poll_seconds = plan, Path(job_dir), shipped, poll_seconds
        self.placement: dict | None = None
        self._q: queue.Queue[str] = queue.Queue()
        self._code: int | None = None
        self._violation: str | None = None
        self._stop = None                     # "terminate" | "kill", as asked by the worker
        self._actor = None
        self._placed = False
        self._thread = None
        if plan is not None:
            self._thread = threading.Thread(target=self._drive, daemon=True, name=f"ray-{plan.tag}")
            self._thread.start()

    @classmethod
    def refused(cls, job_dir: Path, message: str, code: str = "does_not_fit_a_node",
                status: int = EXIT_CONFIG) -> "RayExecution":
        """Finished at once: by default a configuration error (the worker fails the job, no retry)."""
        execution = cls(None, job_dir, [], 0)
        execution._q.put(json.dumps({"type": "error", "code": code, "message": message}))
        execution._code = status
        return execution

    # ---- Execution protocol --------------------------------------------------------------
    def poll(self) -> int | None:
        return self._code

    def lines(self) -> list[str]:
        return drain(self._q)

    @property
    def violation(self) -> str | None:
        return self._violation

    def terminate(self) -> None:
        self._signal("terminate")

    def kill(self) -> None:
        self._signal("kill")

    def _signal(self, what: str) -> None:
        if self._stop != "kill":
            self._stop = what
        if self._actor is not None and self._code is None:
            getattr(self._actor, what).remote()

    # ---- the driving thread --------------------------------------------------------------
    def _drive(self) -> None:
        import ray

        key = secrets.token_bytes(32)         # this job's alone; sent in a direct actor call, never stored
        plan, code = self.plan, EXIT_INFRA
        try:
            self._actor = _runner_class().options(num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=0,
                                                  max_task_retries=0).remote()
            self._place()
            self._send(key)
            ray.get(self._actor.start.remote(key, dataclasses.asdict(plan)))
            if self._stop:                    # asked before the runner existed
                getattr(self._actor, self._stop).remote()
            result, self._violation = self._follow()
            self._receive(key)
            code = result
        except _StoppedWaiting:
            code = EXIT_STOPPED if self._stop == "terminate" else EXIT_KILLED
        except Exception as exc:              # a node lost, a runner that could not start: retried
            log.warning("ray job runner failed", extra={"job": plan.tag, "error": type(exc).__name__})
            self._q.put(json.dumps({"type": "error", "code": "cluster_error",
                                    "message": f"The job's Ray node failed: {type(exc).__name__}: {str(exc)[:500]}"}))
        finally:
            self._release()                   # nothing of the job left on the node...
            self._code = code                 # ...before the worker hears it ended

    def _place(self) -> None:
        """Wait for Ray to place the runner, saying so once if it takes a while."""
        import ray

        t0, noted = time.monotonic(), False
        ref = self._actor.where.remote()
        while True:
            try:
                where = ray.get(ref, timeout=0.5)
                break
            except ray.exceptions.GetTimeoutError:
                if self._stop:                # a cancel while it waits: nothing ran, nothing to collect
                    raise _StoppedWaiting() from None
                if not noted and time.monotonic() - t0 > WAITING_NOTE_AFTER_S:
                    noted = True
                    self._q.put(json.dumps({"type": "log", "message": f"Waiting for a Ray node with {self.plan.cpus} "
                                            f"free CPU(s)" + (f" and {self.plan.gpus} GPU(s)" if self.plan.gpus else "")
                                            + "."}))
        plan, self._placed = self.plan, True
        self.placement = {"executor": "ray", "node": where["hostname"], "node_id": where["node_id"],
                          "node_ip": where["node_ip"], "cpus": plan.cpus, "gpu_ids": where["gpu_ids"],
                          "devices": [f"gpu:{g}" for g in where["gpu_ids"]] or [f"cpu x{plan.cpus}"],
                          "processes": plan.processes, "threads_per_process": max(1, plan.cpus // plan.processes)}
        self._q.put(json.dumps({"type": "log", "message": f"Running on Ray node {where['node_ip']} "
                                f"({where['node_id'][:12]}): {self.plan.cpus} CPU(s)"
                                + (f", {self.plan.gpus} GPU(s)" if self.plan.gpus else "") + "."}))

    def _send(self, key: bytes) -> None:
        """The job folder's spec, inputs and checkpoints (and models it reads), as one encrypted
        tar, a chunk per call: bounded memory on both ends, nothing in plaintext on the way."""
        import ray

        with tempfile.TemporaryFile(dir=self.job_dir) as tmp:
            writer = stream_cipher(key, self.plan.tag, STREAM_IN).encryptor(tmp)
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                for name in ("spec.json", "inputs", "work"):
                    add_regular_tree(tf, self.job_dir / name, f"{JOB}/{name}")
                for i, path in enumerate(self.shipped):
                    add_regular_tree(tf, path, f"{READABLE}/{i}")
            writer.close()
            tmp.seek(0)
            while chunk := tmp.read(CHUNK):
                ray.get(self._actor.receive.remote(self.plan.tag, chunk))

    def _follow(self) -> tuple[int, str | None]:
        import ray

        while True:
            lines, code, violation = ray.get(self._actor.step.remote())
            for line in lines:
                self._q.put(line)
            if code is not None:
                return code, violation
            time.sleep(self.poll_seconds)

    def _receive(self, key: bytes) -> None:
        """The job's artifact folder, checkpoints and log, decrypted into the local job folder
        (regular files and folders only: the job wrote them)."""
        import ray

        count = ray.get(self._actor.pack.remote(key, self.plan.tag))
        staging = Path(tempfile.mkdtemp(prefix=".from-node-", dir=self.job_dir))
        try:
            with tempfile.TemporaryFile(dir=staging) as tmp:
                for i in range(count):
                    tmp.write(ray.get(self._actor.chunk.remote(i)))
                tmp.seek(0)
                extract_regular(stream_cipher(key, self.plan.tag, STREAM_OUT).reader(tmp), staging)
            _merge(staging, self.job_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _release(self) -> None:
        import ray

        if self._actor is None:
            return
        try:
            if self._placed:
                ray.get(self._actor.cleanup.remote(), timeout=60)
        except Exception:                    # the node is gone: its runner's successor sweeps it
            log.warning("could not clean a Ray node's job folder", extra={"job": self.plan.tag})
        try:
            ray.kill(self._actor)
        except Exception:
            pass


def _merge(staging: Path, job_dir: Path) -> None:
    """The node's artifact/ and work/ replace the local ones; its log is appended to job.log."""

    for name in ("artifact", "work"):
        incoming = staging / name
        if not incoming.is_dir():
            continue
        target = job_dir / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        os.replace(incoming, target)
    log_file = staging / "job.log"
    if log_file.is_file():
        with open(log_file, "rb") as src, open_append(job_dir / "job.log") as out:
            shutil.copyfileobj(src, out)
