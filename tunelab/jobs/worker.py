"""The worker: claims queued jobs, runs each through an executor, and turns the job process's
report into status transitions, events and a registered tuned model.

`tunelab worker` runs one on its own; `tunelab serve` runs one in a thread of the server.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from ..security.storage import cipher, dataset_store, seal_folder
from ..db import Database
from ..db.models import Dataset, Job, TunedModel
from ..settings import Settings
from . import metering, store, webhooks
from .child import EXIT_CONFIG, EXIT_DATA, EXIT_OK, EXIT_STOPPED
from .executors import Executor, executor_for
from .results import store_result_file
from .spec import ChildSpec, JobSpec
from .status import JobStatus

log = logging.getLogger("tunelab.worker")
_SECRET_MARKERS = ("DATABASE_URL", "SECRET", "PASSWORD", "TOKEN", "API_KEY", "MASTER_KEY")


def job_dir(settings: Settings, job: Job) -> Path:
    return settings.jobs_dir / job.tenant_id / job.id


def tenant_runtime(settings: Settings, tenant_id: str) -> Path:
    path = settings.home / "tenants" / tenant_id / "runtime"
    path.mkdir(parents=True, exist_ok=True)
    return path


def child_env() -> dict[str, str]:
    """The job process gets no database URL and no secrets."""
    return {k: v for k, v in os.environ.items() if not any(m in k.upper() for m in _SECRET_MARKERS)}


def tuned_model_id(job: Job, spec: JobSpec, strategy: str) -> str:
    tag = spec.suffix or strategy
    return f"ft:{spec.model}:{tag}:{job.id.removeprefix('ftjob-')[:12]}"


class Worker:
    def __init__(self, settings: Settings, db: Database, executor: Executor | None = None):
        self.settings, self.db = settings, db
        self.executor = executor or executor_for(settings.insecure_mode)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()

    # ---- loop ---------------------------------------------------------------------------
    def run_forever(self) -> None:
        log.info("worker started", extra={"worker": self.id})
        threading.Thread(target=self._deliver_webhooks, daemon=True, name="webhooks").start()
        threading.Thread(target=metering.housekeeping_loop, args=(self,), daemon=True, name="billing").start()
        while not self.stopping.is_set():
            try:
                if not self.run_once():
                    self.stopping.wait(self.settings.worker_poll_seconds)
            except Exception:      # a database hiccup must not end the worker
                log.exception("worker iteration failed")
                self.stopping.wait(1.0)

    def run_once(self) -> bool:
        with self.db.session() as s:
            store.requeue_expired(s, max_attempts=self.settings.max_attempts)
            job = store.claim(s, self.id, self.settings.lease_seconds)
        if job is None:
            return False
        self.run_job(job.id)
        return True

    def _deliver_webhooks(self) -> None:
        while not self.stopping.is_set():
            try:
                with self.db.session() as s:
                    webhooks.deliver_due(s, secret_of=lambda h: cipher(self.settings.home, h.tenant_id)
                                         .decrypt_text(h.secret))
            except Exception:
                log.exception("webhook delivery failed")
            self.stopping.wait(0.5)

    # ---- one job ------------------------------------------------------------------------
    def run_job(self, job_id: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job.cancel_requested:
                store.transition(s, job, JobStatus.CANCELLED, "Cancelled before it started.")
                webhooks.enqueue(s, job, "cancelled")
                return
            store.transition(s, job, JobStatus.VALIDATING,
                             f"Validating the dataset (attempt {job.attempts}).", worker=self.id)
            try:
                spec_path, inputs = self._write_child_spec(s, job)
            except LookupError as exc:
                self._fail(s, job, "invalid_training_file", str(exc))
                return
            runtime = tenant_runtime(self.settings, job.tenant_id)
        # TUNELAB_HOME for the job is its tenant's own runtime folder (feature cache, throughput
        # table): no cache is shared across tenants, and the server's home stays out of reach.
        execution = self.executor.start(spec_path, spec_path.parent, child_env() | {"TUNELAB_HOME": str(runtime)},
                                        readable=inputs, writable=[runtime])
        self._supervise(job_id, execution, metering.JobMeter(job_id, job.tenant_id, execution,
                                                             self.settings.heartbeat_seconds))

    def _write_child_spec(self, s, job: Job) -> tuple[Path, list[Path]]:
        spec = JobSpec.model_validate(job.spec)
        folder = job_dir(self.settings, job)
        inputs_dir = folder / "inputs"
        inputs_dir.mkdir(parents=True, exist_ok=True)
        store = dataset_store(self.settings.home, job.tenant_id)

        def path_of(dataset_id: str, role: str) -> tuple[str, Dataset]:
            """The dataset decrypted into the job's own folder (the only place the job can read);
            removed again when the job ends."""
            row = s.get(Dataset, dataset_id)
            stored = store.get(row.sha256) if row is not None and row.sha256 else None
            if row is None or row.tenant_id != job.tenant_id or stored is None:
                raise LookupError(f"The dataset {dataset_id} no longer exists.")
            dest = inputs_dir / f"{role}{Path(row.filename).suffix.lower()}"
            return str(stored.export_to(dest)), row

        train_path, train_row = path_of(spec.dataset_id, "train")
        test_path = path_of(spec.test_dataset_id, "test")[0] if spec.test_dataset_id else None
        folder = job_dir(self.settings, job)
        folder.mkdir(parents=True, exist_ok=True)
        if spec.model.startswith("upload:"):       # the tenant's own uploaded base model
            from ..security.storage import find_model

            found = find_model(self.settings.home, job.tenant_id, spec.model)
            if found is None:
                raise LookupError(f"The uploaded model {spec.model} no longer exists.")
            spec = spec.model_copy(update={"model": str(found)})
        child = ChildSpec(job=spec, train_file=train_path, test_file=test_path,
                          text_column=train_row.text_column, label_column=train_row.label_column,
                          work_dir=str(folder / "work"), out_dir=str(folder / "artifact"))
        path = folder / "spec.json"
        path.write_text(child.model_dump_json(indent=2))
        inputs = []
        model_dir = Path(spec.model)
        if model_dir.is_dir():          # bring-your-own folder: readable, nothing else around it
            inputs.append(model_dir.resolve())
        return path, inputs

    def _supervise(self, job_id: str, execution, meter=None) -> None:
        state = {"result": None, "error": None, "stopped": None}
        next_beat, term_sent_at = 0.0, None
        while True:
            code = execution.poll()
            with self.db.session() as s:
                job = s.get(Job, job_id)
                for line in execution.lines():
                    self._handle_line(s, job, line, state)
                    meter and meter.observe(line)
                meter and meter.sample()
                if code is not None:
                    meter and meter.tick(s)             # the last usage, before settling
                    self._finish(s, job, code, state)
                    if JobStatus(job.status).is_terminal:    # plaintext inputs go with the job
                        shutil.rmtree(job_dir(self.settings, job) / "inputs", ignore_errors=True)
                    return
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.settings.heartbeat_seconds
                    if not store.heartbeat(s, job, self.id, self.settings.lease_seconds):
                        log.warning("lost the lease; stopping job", extra={"job": job_id})
                        execution.kill()
                        execution_wait(execution)
                        return
                    s.refresh(job)
                    if job.cancel_requested and term_sent_at is None:
                        store.add_event(s, job, "log", "Cancel requested: stopping at the next step with a checkpoint.")
                        execution.terminate()
                        term_sent_at = now
                    # Billing: charge the compute since the last beat; out of credit -> checkpoint, pause.
                    if meter and meter.tick(s).exhausted and term_sent_at is None and not job.cancel_requested:
                        state["credit_exhausted"] = True
                        store.add_event(s, job, "log", "Credit exhausted: stopping at the next step with a "
                                                       "checkpoint; a top-up resumes the job.", level="warning")
                        execution.terminate()
                        term_sent_at = now
                if term_sent_at is not None and now - term_sent_at > self.settings.cancel_grace_seconds:
                    store.add_event(s, job, "log", "Grace period over: job process killed.", level="warning")
                    execution.kill()
            time.sleep(0.2)

    def _handle_line(self, s, job: Job, line: str, state: dict) -> None:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            store.add_event(s, job, "log", line[:2000])
            return
        kind = msg.pop("type", "log")
        if kind == "phase" and msg.get("phase") == "running" and job.status == JobStatus.VALIDATING.value:
            store.transition(s, job, JobStatus.RUNNING,
                             f"Dataset valid ({msg.get('train_rows')} train / {msg.get('validation_rows')} "
                             f"validation / {msg.get('test_rows')} test rows); training started.", **msg)
        elif kind == "progress":
            job.progress = msg
            store.add_event(s, job, "progress", msg.get("message", ""), msg)
        elif kind == "checkpoint":
            store.add_event(s, job, "checkpoint", f"Checkpoint at step {msg['step']}.", msg)
        elif kind in ("result", "error", "stopped"):
            state[kind if kind != "stopped" else "stopped"] = msg
        else:
            store.add_event(s, job, "log", str(msg.get("message", msg)))

    def _finish(self, s, job: Job, code: int, state: dict) -> None:
        err = state["error"] or {}
        if job.cancel_requested:
            store.transition(s, job, JobStatus.CANCELLED, "Cancelled; its last checkpoint was kept.",
                             step=(state["stopped"] or {}).get("step"))
            webhooks.enqueue(s, job, "cancelled")
        elif code == EXIT_OK and state["result"]:
            self._succeed(s, job, state["result"])
        elif code in (EXIT_DATA, EXIT_CONFIG):      # the user's input: retrying cannot help
            self._fail(s, job, err.get("code", "invalid_job"), err.get("message", "invalid job"))
        elif code == EXIT_STOPPED or state.get("credit_exhausted"):   # stopped without a cancel: paused (billing)
            store.transition(s, job, JobStatus.PAUSED, "Paused at a checkpoint: credit ran out; a top-up resumes it."
                             if state.get("credit_exhausted") else "Paused at a checkpoint.",
                             step=(state["stopped"] or {}).get("step"), reason="credit_exhausted"
                             if state.get("credit_exhausted") else "stopped")
            webhooks.enqueue(s, job, "paused")
        elif job.attempts < self.settings.max_attempts:
            store.transition(s, job, JobStatus.QUEUED,
                             f"Infrastructure failure (exit {code}): {err.get('message', 'no detail')}; retrying.",
                             reason="infrastructure", exit_code=code)
        else:
            self._fail(s, job, err.get("code", "internal_error"),
                       f"Failed {job.attempts} times; last: {err.get('message', f'exit status {code}')}")

    def _succeed(self, s, job: Job, result: dict) -> None:
        spec = JobSpec.model_validate(job.spec)
        ids = {}
        for strategy, path in result.get("artifacts", {}).items():
            path = str(seal_folder(self.settings.home, job.tenant_id, Path(path)))   # encrypted at rest
            model_id = tuned_model_id(job, spec, strategy)
            metrics = result.get("metrics") if result["kind"] == "train" else \
                next((r for r in result.get("results", []) if r.get("strategy") == strategy), {})
            if s.get(TunedModel, model_id) is None:
                s.add(TunedModel(id=model_id, tenant_id=job.tenant_id, job_id=job.id, base_model=spec.model,
                                 strategy=strategy, artifact_path=path, metrics=metrics or {}))
            ids[strategy] = model_id
        job.result = {**result, "models": ids}
        if result["kind"] == "train":
            found = store_result_file(s, self.settings.home, job)
            job.result = {**job.result, "result_files": [found] if found else []}
        pick = result.get("strategy") or result.get("recommended")
        job.fine_tuned_model = ids.get(pick)
        summary = result.get("metrics", {})
        if summary:
            store.add_event(s, job, "metrics", _headline(summary) + ".",
                            {k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        store.transition(s, job, JobStatus.SUCCEEDED, f"Job succeeded: {job.fine_tuned_model or 'comparison ready'}.")
        webhooks.enqueue(s, job, "succeeded")

    def _fail(self, s, job: Job, code: str, message: str) -> None:
        job.error_code, job.error_message = code, message
        store.transition(s, job, JobStatus.FAILED, message[:2000], code=code)
        webhooks.enqueue(s, job, "failed")


def _headline(metrics: dict) -> str:
    """The finished run in its task's own terms (macro-F1 for a classifier, held-out loss and token
    F1 for a chat model)."""
    from ..strategies import task_named

    try:
        task = task_named(metrics.get("task") or "text-classification")
        return task.headline(metrics.get("strategy", "the run"), metrics)
    except (KeyError, TypeError, ValueError):
        return f"finished on {metrics.get('test_rows')} test rows"


def execution_wait(execution, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while execution.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
