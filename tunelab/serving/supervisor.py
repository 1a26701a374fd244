"""The API process's side of deployments: starts each deployment's model servers (replicas)
through the job executors (bubblewrap; plain subprocesses in insecure mode only), restarts the
ones that die, unloads idle deployments and starts them again on the next request, and hands out
clients of ready replicas (round-robin).

One monitor thread does every start and stop of a process. Besides keeping the bookkeeping in one
place, it has to: a server dies with the thread that started it (PR_SET_PDEATHSIG, bubblewrap's
--die-with-parent), so servers are never started from short-lived request threads.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import Settings
from .client import ServerClient
from .config import ServedModel, ServerConfig
from .errors import ServerUnavailable
from .replicas import (STOP_GRACE_SECONDS, Replica, forget_plaintext, is_sealed, missing_folders,
                       plaintext_folders, run_folder, server_env)

log = logging.getLogger(__name__)

MAX_FAILED_STARTS = 5


@dataclass
class DeploymentPlan:            # built by services/deployments.py from the DB row
    id: str
    tenant_id: str
    kind: str                    # "generate" | "classify"
    models: dict[str, str] = field(default_factory=dict)   # served name -> artifact path as stored
    base: str | None = None      # base model folder (catalog) for adapters
    base_name: str | None = None
    replicas: int = 1
    idle_seconds: float = 900.0  # 0: never unloaded
    engine: str = "torch"
    batch_window_ms: float = 5.0


class _Deployment:
    def __init__(self, plan: DeploymentPlan, folder: Path):
        self.plan, self.folder = plan, folder
        self.replicas: list[Replica] = []
        self.state = "loading"
        self.error: str | None = None
        self.loaded_at: float | None = None
        self.last_used = time.monotonic()
        self.in_flight = 0
        self.turn = 0
        self.wanted = True               # replicas should be running (False: idle-unloaded, failed, stopped)
        self.plaintext: dict[str, Path] | None = None

    def activity(self, delta: int) -> None:
        self.in_flight = max(0, self.in_flight + delta)
        self.last_used = time.monotonic()

    def view(self) -> dict:
        return {"state": self.state, "replicas": [r.view() for r in self.replicas],
                "restarts": sum(r.restarts for r in self.replicas), "error": self.error, "loaded_at": self.loaded_at}


class Supervisor:
    def __init__(self, settings: Settings, *, executor=None, poll_seconds: float = 0.2,
                 ready_timeout: float = 600.0, threads: int = 0, restart_backoff: float = 0.25):
        """ready_timeout: a server still loading after this long is killed (a failed start);
        threads: torch threads per server (0: torch's default); restart_backoff: the wait before
        starting again after a failed start, doubled each time (at most 5 s)."""
        if executor is None:
            from ..jobs.executors import executor_for

            executor = executor_for(settings.insecure_mode)
        self.settings, self.executor = settings, executor
        self.poll_seconds, self.ready_timeout, self.threads = poll_seconds, ready_timeout, threads
        self.restart_backoff = restart_backoff
        self._deployments: dict[str, _Deployment] = {}
        self._lock = threading.RLock()         # the bookkeeping
        self._process_lock = threading.Lock()  # starting/stopping one deployment's processes
        self._wake = threading.Event()
        self._closing = False
        self._monitor: threading.Thread | None = None
        atexit.register(self.close)            # never leave servers behind, even without close()

    # ---- the API side ---------------------------------------------------------------------------
    def ensure(self, plan: DeploymentPlan) -> None:
        """Starts the deployment's missing replicas (in the monitor thread); returns at once."""
        if self._closing:
            raise ServerUnavailable("the server is shutting down")
        with self._lock:
            dep = self._deployments.get(plan.id)
            if dep is None:
                dep = self._deployments[plan.id] = _Deployment(plan, run_folder(self.settings.home, plan.id))
            elif dep.state in ("idle-unloaded", "stopped"):
                dep.plan, dep.state, dep.wanted, dep.last_used = plan, "loading", True, time.monotonic()
            self._start_monitor()
        self._wake.set()

    async def client(self, plan: DeploymentPlan, wait: float = 120.0) -> ServerClient:
        """A ready replica's client (round-robin); ServerUnavailable when none is ready in time."""
        deadline = time.monotonic() + wait
        while True:
            self.ensure(plan)          # again each round: an idle unload may have come in between
            with self._lock:
                dep = self._deployments[plan.id]
                if dep.state == "failed":
                    raise ServerUnavailable(f"deployment {plan.id} failed: {dep.error}")
                # A replica that died since the monitor's last round is not handed out.
                ready = [r for r in dep.replicas if r.state == "ready" and r.alive()]
                if ready:
                    replica = ready[dep.turn % len(ready)]
                    dep.turn += 1
                    dep.last_used = time.monotonic()
                    return replica.client
            if time.monotonic() >= deadline:
                raise ServerUnavailable(f"deployment {plan.id} is not ready after {wait:.0f} s (still loading); "
                                        "retry shortly")
            await asyncio.sleep(0.05)

    def state(self, deployment_id: str) -> dict:
        with self._lock:
            dep = self._deployments.get(deployment_id)
            if dep is None:
                return {"state": "stopped", "replicas": [], "restarts": 0, "error": None, "loaded_at": None}
            return dep.view()

    def stop(self, deployment_id: str) -> None:
        with self._lock:
            dep = self._deployments.pop(deployment_id, None)
        if dep is not None:
            with self._process_lock:
                self._stop_all(dep, "stopped")

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=30)
        for deployment_id in list(self._deployments):
            self.stop(deployment_id)
        atexit.unregister(self.close)

    # ---- the monitor ----------------------------------------------------------------------------
    def _start_monitor(self) -> None:
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._run, daemon=True, name="serving-supervisor")
            self._monitor.start()

    def _run(self) -> None:
        while not self._closing:
            with self._lock:
                deployments = list(self._deployments.items())
            for deployment_id, dep in deployments:
                with self._process_lock:
                    if self._closing or self._deployments.get(deployment_id) is not dep:
                        continue           # stopped meanwhile
                    try:
                        self._tick(dep)
                    except Exception as e:      # noqa: BLE001  one deployment's trouble must not stop the others
                        log.exception("deployment supervision failed", extra={"deployment": deployment_id})
                        self._fail(dep, f"its supervision failed: {type(e).__name__}: {e}")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _tick(self, dep: _Deployment) -> None:
        if not dep.wanted:
            return
        if not dep.replicas:
            dep.replicas = [Replica(i, dep.folder, dep.activity) for i in range(max(1, dep.plan.replicas))]
        now = time.monotonic()
        for replica in dep.replicas:
            self._watch(dep, replica, now)
            if not dep.wanted:             # failed
                return
        with self._lock:
            if any(r.state == "ready" for r in dep.replicas):
                if dep.state != "ready":
                    dep.state, dep.loaded_at = "ready", time.time()
            else:
                dep.state = "loading"
        if dep.plaintext is not None and all(r.state == "ready" for r in dep.replicas):
            forget_plaintext(dep.folder)   # decrypted weights: only until every replica has loaded them
            dep.plaintext = None
        idle = dep.plan.idle_seconds
        if idle > 0 and dep.state == "ready" and dep.in_flight == 0 and now - dep.last_used > idle:
            log.info("deployment idle: unloaded", extra={"deployment": dep.plan.id})
            self._stop_all(dep, "idle-unloaded")

    def _watch(self, dep: _Deployment, replica: Replica, now: float) -> None:
        code = replica.exited()
        if replica.execution is None:
            if now >= replica.next_start:
                self._start(dep, replica)
            return
        if code is not None:
            self._exited(dep, replica, code)
        elif replica.state == "loading":
            if replica.client.health_sync(timeout=1.0) is not None:
                replica.state, replica.failures = "ready", 0
                replica.find_pid()
                log.info("model server ready", extra={"deployment": dep.plan.id, "replica": replica.index,
                                                      "seconds": round(now - replica.started_at, 1)})
            elif now - replica.started_at > self.ready_timeout:
                replica.execution.kill()   # seen as a failed start on the next round

    def _exited(self, dep: _Deployment, replica: Replica, code: int) -> None:
        tail = replica.log_tail()
        was = replica.state
        replica.execution, replica.state, replica.pid = None, "stopped", None
        replica.restarts += 1
        if was == "ready":                 # a crash: started again at once
            log.warning("model server exited; restarting", extra={"deployment": dep.plan.id, "code": code})
            replica.next_start = 0.0
            return
        replica.failures += 1
        if replica.failures >= MAX_FAILED_STARTS:
            self._fail(dep, f"its model server exited (status {code}) {replica.failures} times in a row before it was "
                            f"ready; its log ends with:\n{tail}")
            return
        replica.next_start = time.monotonic() + min(5.0, self.restart_backoff * 2 ** (replica.failures - 1))

    def _start(self, dep: _Deployment, replica: Replica) -> None:
        plan = dep.plan
        missing = missing_folders(plan.models, plan.base)
        if missing:
            self._fail(dep, "the deployment names folders that do not exist: " + "; ".join(missing)
                       + ". Delete it and deploy the model again.")
            return
        if dep.plaintext is None:
            dep.plaintext = plaintext_folders(self.settings.home, plan.tenant_id, plan.models, dep.folder)
        config = self._config(dep, replica)
        readable = sorted({p for p in [*dep.plaintext.values(), *([Path(plan.base)] if plan.base else [])]
                           if dep.folder not in p.parents})
        shared = Path(self.settings.shared_models)
        if shared.is_dir():     # shipped pretrained weights (ResNet-20) a classifier's base converts from, as jobs do
            readable.append(shared.resolve())
        env = server_env(dep.folder) | {"TUNELAB_SHARED_MODELS": str(self.settings.shared_models)}
        replica.start(self.executor, config, env, readable)

    def _config(self, dep: _Deployment, replica: Replica) -> ServerConfig:
        plan = dep.plan
        sealed = any(is_sealed(p) for p in plan.models.values())
        work = dep.folder / "work"
        work.mkdir(mode=0o700, exist_ok=True)
        return ServerConfig(
            socket=str(replica.socket), kind=plan.kind,
            models=[ServedModel(name, str(folder)) for name, folder in dep.plaintext.items()],
            base=plan.base, base_name=plan.base_name, engine=plan.engine, batch_window_ms=plan.batch_window_ms,
            # Decrypted folders are deleted once loaded: every adapter stays loaded (never evicted
            # and read again).
            max_adapters=max(8, len(plan.models)) if sealed else 8,
            threads=self.threads, work=str(work))

    def _fail(self, dep: _Deployment, error: str) -> None:
        log.error("deployment failed", extra={"deployment": dep.plan.id})
        self._stop_all(dep, "failed")
        with self._lock:
            dep.error = error

    def _stop_all(self, dep: _Deployment, state: str) -> None:
        dep.wanted = False
        stopping = [replica.ask_to_stop() for replica in dep.replicas]     # all at once, then waited for
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for replica, execution in zip(dep.replicas, stopping):
            if execution is not None:
                replica.finish_stop(execution, deadline)
            replica.failures, replica.next_start = 0, 0.0
        forget_plaintext(dep.folder)
        dep.plaintext = None
        with self._lock:
            dep.state = state          # once no process is left
