"""The worker: claims queued jobs, runs each through an executor, and turns the job process's
report into status transitions, events and a registered tuned model.

`tunelab worker` runs one on its own; `tunelab serve` runs one in a thread of the server.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..security.safe_fs import UnsafeEntry
from ..security import sealed_fields
from ..security.storage import cipher, dataset_store
from ..db import Database
from ..db.models import Dataset, Job, TunedModel
from ..settings import Settings
from ..strategies import available
from . import batch_predict, bench, diskfull, metering, store, webhooks
from .devices import Devices, Reservation
from .scheduling import Scheduler, record_placement
from .child import EXIT_CONFIG, EXIT_DATA, EXIT_OK, EXIT_STOPPED
from .executors import Executor, executor_for
from .jobdir import ARTIFACT, INPUTS, SPEC, WORK, JobFolder, artifact_parts
from .naming import tuned_model_name
from .results import store_result_file
from .spec import BATCH, BENCH, ChildSpec, JobSpec
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
        self.last_beat = time.monotonic()      # the loop's last round that reached the database (/readyz)
        # Its devices: several jobs at once where they allow (settings.worker_max_jobs), each with
        # its own reservation; one at a time on a CPU worker unless the operator says otherwise.
        self.devices = Devices.of(settings, elsewhere=getattr(self.executor, "places_jobs", False))
        self.scheduler = Scheduler(self.devices, self._placement)
        self.jobs: dict[str, threading.Thread] = {}      # the jobs running in threads of their own

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
        for thread in list(self.jobs.values()):      # the jobs in hand finish (as the one job did)
            thread.join()

    def run_once(self) -> bool:
        """Claim the next job that fits (jobs/scheduling.py) and run it: here, when the worker runs
        one job at a time, else in a thread of its own. False when nothing was claimed."""
        with self.db.session() as s:
            store.requeue_expired(s, max_attempts=self.settings.max_attempts)
            claimed = self.scheduler.claim(s, self.id, self.settings.lease_seconds)
        self.last_beat = time.monotonic()
        if claimed is None:
            return False
        job, held = claimed
        if self.devices.max_jobs == 1:
            try:
                self.run_job(job.id, job.lease_version, held)
            finally:
                self.devices.release(job.id)
            return True
        thread = threading.Thread(target=self._run_in_thread, args=(job.id, job.lease_version, held),
                                  daemon=True, name=f"job-{job.id}")
        self.jobs[job.id] = thread
        thread.start()
        return True

    def _run_in_thread(self, job_id: str, version: int, held: Reservation) -> None:
        try:
            self.run_job(job_id, version, held)
        except Exception:      # its lease then runs out and the job is requeued (max_attempts)
            log.exception("job attempt failed in the worker", extra={"job": job_id})
        finally:
            self.devices.release(job_id)
            self.jobs.pop(job_id, None)

    def _placement(self, held: Reservation) -> dict:
        return held.placement(self.devices.inv, self.executor.name, self.id, child_env())

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
    def run_job(self, job_id: str, version: int | None = None, held: Reservation | None = None) -> None:
        """Run the job this worker claimed (`version`: its lease_version after the claim, the
        token every write of this attempt is fenced with; by default the current one; `held`: the
        devices reserved for it, by default the whole machine's CPUs and no GPU)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            version = job.lease_version if version is None else version
            if held is None:
                need = self.devices.need_of(job.spec)
                held = Reservation(job.id, need.processes, max(need.cpus, self.devices.inv.cpus))
            if not self._hold(s, job, version):
                return
            if job.cancel_requested:
                store.transition(s, job, JobStatus.CANCELLED, "Cancelled before it started.")
                webhooks.enqueue(s, job, "cancelled")
                return
            store.transition(s, job, JobStatus.VALIDATING,
                             f"Preparing the hardware benchmark (attempt {job.attempts})." if job.kind == BENCH
                             else f"Loading the model and the file to label (attempt {job.attempts})."
                             if job.kind == BATCH else f"Validating the dataset (attempt {job.attempts}).",
                             worker=self.id)
            record_placement(s, job)
            try:
                spec_path, inputs = self._write_child_spec(s, job)
                runtime = tenant_runtime(self.settings, job.tenant_id)
            except LookupError as exc:
                self._fail(s, job, "invalid_training_file", str(exc))
                return
            except OSError as exc:
                if not diskfull.is_disk_full(exc):
                    raise
                self._fail_disk_full(s, job, "writing the job's input files")
                return
        try:
            # TUNELAB_HOME for the job is its tenant's own runtime folder (feature cache, throughput
            # table): no cache is shared across tenants, and the server's home stays out of reach.
            env = held.env(child_env() | {"TUNELAB_HOME": str(runtime),
                                          "TUNELAB_SHARED_MODELS": str(self.settings.shared_models)})
            execution = self.executor.start(spec_path, spec_path.parent, env, readable=inputs, writable=[runtime],
                                            gpus=len(held.gpus), cpus=held.cpus)
        except OSError as exc:
            if not diskfull.is_disk_full(exc):
                raise
            with self.db.session() as s:
                job = s.get(Job, job_id)
                if self._hold(s, job, version):
                    self._fail_disk_full(s, job, "starting the job")
            return
        meter = metering.JobMeter(job_id, job.tenant_id, execution, self.settings.heartbeat_seconds)
        if meter.device != "cpu":           # GPU time is billed a GPU: one for each of its processes
            meter.units = max(1, len(held.gpus))
        self._supervise(job_id, version, execution, meter)

    def _hold(self, s, job: Job, version: int) -> bool:
        """Still this attempt's worker? Renews the lease; see store.hold."""
        if store.hold(s, job, self.id, version, self.settings.lease_seconds):
            return True
        s.rollback()
        log.warning("lost the lease: another worker has the job now; this attempt's result is discarded",
                    extra={"job": job.id, "worker": self.id, "lease_version": version})
        return False

    def _write_child_spec(self, s, job: Job) -> tuple[Path, list[Path]]:
        spec = JobSpec.model_validate(job.spec)
        folder = JobFolder(job_dir(self.settings, job))
        if spec.is_bench:          # no dataset, no model: the job measures the machine
            child = ChildSpec(job=spec, work_dir=str(folder.path / WORK), out_dir=str(folder.path / ARTIFACT))
            folder.prepare_attempt({}, child.model_dump_json(indent=2))
            return folder.path / SPEC, []
        store = dataset_store(self.settings.home, job.tenant_id)

        def input_of(dataset_id: str, role: str) -> tuple[str, bytes, Dataset]:
            """The dataset decrypted, for the job's own folder (the only place the job can read);
            removed again when the job ends."""
            row = s.get(Dataset, dataset_id)
            stored = store.get(row.sha256) if row is not None and row.sha256 else None
            if row is None or row.tenant_id != job.tenant_id or stored is None:
                raise LookupError(f"The dataset {dataset_id} no longer exists.")
            suffix = Path(row.filename).suffix.lower()
            return f"{role}{suffix if suffix[1:].isalnum() else ''}", stored.read(), row

        train_name, train_data, train_row = input_of(spec.dataset_id, "train")
        files = {train_name: train_data}
        if spec.is_batch:
            return self._write_batch_spec(s, job, spec, folder, files, train_name, train_row)
        if spec.test_dataset_id:
            test_name, files[test_name], _ = input_of(spec.test_dataset_id, "test")
        train_path, test_path = folder.path / INPUTS / train_name, \
            (folder.path / INPUTS / test_name if spec.test_dataset_id else None)
        if spec.model.startswith("upload:"):       # the tenant's own uploaded base model
            from ..security.storage import find_model

            found = find_model(self.settings.home, job.tenant_id, spec.model)
            if found is None:
                raise LookupError(f"The uploaded model {spec.model} no longer exists.")
            spec = spec.model_copy(update={"model": str(found)})
        child = ChildSpec(job=spec, train_file=str(train_path), test_file=test_path and str(test_path),
                          text_column=train_row.text_column, label_column=train_row.label_column,
                          work_dir=str(folder.path / WORK), out_dir=str(folder.path / ARTIFACT))
        # A fresh inputs/ and spec.json each attempt, written without following what the job left.
        folder.prepare_attempt(files, child.model_dump_json(indent=2))
        path = folder.path / SPEC
        inputs = []
        model_dir = Path(spec.model)
        if model_dir.is_dir():          # bring-your-own folder: readable, nothing else around it
            inputs.append(model_dir.resolve())
        shared = self.settings.shared_models
        if shared.is_dir():             # shipped pretrained weights (ResNet-20): read-only, converted in the job's home
            inputs.append(shared.resolve())
        return path, inputs

    def _write_batch_spec(self, s, job: Job, spec: JobSpec, folder: JobFolder, files: dict, name: str,
                          row: Dataset) -> tuple[Path, list[Path]]:
        """A batch-predict job: its file and its tuned model's folder, decrypted into inputs/ (the
        job cannot read the tenant's keys); the base model of an uploaded one readable too."""
        from ..security.storage import open_sealed

        model = s.get(TunedModel, spec.tuned_model)
        if model is None or model.tenant_id != job.tenant_id:
            raise LookupError(f"The tuned model {spec.tuned_model} no longer exists.")
        model_dir = folder.path / INPUTS / "model"
        child = ChildSpec(job=spec, train_file=str(folder.path / INPUTS / name), text_column=row.text_column,
                          model_dir=str(model_dir), work_dir=str(folder.path / WORK), out_dir=str(folder.path / ARTIFACT))
        folder.prepare_attempt(files, child.model_dump_json(indent=2))
        open_sealed(self.settings.home, job.tenant_id, Path(model.artifact_path), model_dir)
        inputs = []
        base = Path(model.base_model or "")
        if model.base_model and base.is_dir():
            inputs.append(base.resolve())
        return folder.path / SPEC, inputs

    def _supervise(self, job_id: str, version: int, execution, meter=None) -> None:
        state = {"result": None, "error": None, "stopped": None}
        next_beat, term_sent_at = 0.0, None
        while True:
            code = execution.poll()
            with self.db.session() as s:
                job = s.get(Job, job_id)
                now = time.monotonic()
                # Checked before this round writes anything: a worker that stalled past its lease
                # (paused, cut off) learns here that another worker took the job, and then records
                # nothing of its attempt: no event, no usage, no result, no artifact.
                if (code is not None or now >= next_beat) and not self._hold(s, job, version):
                    if code is None:
                        execution.kill()
                        execution_wait(execution)
                    return
                if not state.get("placed") and getattr(execution, "placement", None):
                    state["placed"] = record_placement(s, job, execution.placement)   # a cluster's node, once known
                for line in execution.lines():
                    self._handle_line(s, job, line, state)
                    meter and meter.observe(line)
                meter and meter.sample()
                if code is not None:
                    meter and meter.tick(s)             # the last usage, before settling
                    state["violation"] = getattr(execution, "violation", None)
                    self._finish(s, job, code, state)
                    if JobStatus(job.status).is_terminal:    # plaintext inputs go with the job
                        JobFolder(job_dir(self.settings, job)).remove_inputs()
                    return
                if now >= next_beat:                    # the lease was renewed above
                    next_beat = now + self.settings.heartbeat_seconds
                    s.flush()                   # what this round's lines changed, before the reload
                    s.refresh(job)              # (a cancel request comes from the API)
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
            self.last_beat = time.monotonic()
            time.sleep(0.2)

    def _handle_line(self, s, job: Job, line: str, state: dict) -> None:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            store.add_event(s, job, "log", line[:2000])
            return
        kind = msg.pop("type", "log")
        if kind == "phase" and msg.get("phase") == "running" and job.status == JobStatus.VALIDATING.value:
            if job.kind == BATCH:
                store.transition(s, job, JobStatus.RUNNING, "Model loaded: labelling the file's texts.", **msg)
                return
            if job.kind == BENCH:
                store.transition(s, job, JobStatus.RUNNING, "Measuring this worker's machine: "
                                 + ("device figures only." if msg.get("sweep") is False else
                                    "device figures, then short training runs of the "
                                    + ("default model." if msg.get("quick", True) else "catalog's models.")), **msg)
                return
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
            store.transition(s, job, JobStatus.CANCELLED, "Cancelled; nothing was stored."
                             if job.kind in (BENCH, BATCH) else "Cancelled; its last checkpoint was kept.", step=(state["stopped"] or {}).get("step"))
            webhooks.enqueue(s, job, "cancelled")
        elif state.get("violation"):                # over a sandbox limit: retrying cannot help
            self._fail(s, job, "resource_limit", f"The job was stopped: {state['violation']}.")
        elif code == EXIT_OK and state["result"]:
            try:
                with s.begin_nested():          # a full disk undoes what success had recorded
                    self._succeed(s, job, state["result"])
            except OSError as exc:
                if not diskfull.is_disk_full(exc):
                    raise
                self._fail_disk_full(s, job, "sealing the job's model and results")
        elif code in (EXIT_DATA, EXIT_CONFIG):      # the user's input: retrying cannot help
            self._fail(s, job, err.get("code", "invalid_job"), err.get("message", "invalid job"))
        elif code != EXIT_STOPPED and not state.get("credit_exhausted") and \
                diskfull.job_ran_out(err, job_dir(self.settings, job)):     # a retry would fill it again
            self._fail_disk_full(s, job, "the job wrote its checkpoints and outputs")
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

    def _sealed_artifacts(self, s, job: Job, spec: JobSpec, result: dict) -> dict[str, str]:
        """Each strategy the job reports done, sealed (encrypted at rest) from the folder the
        worker assigned it: the paths the job printed are ignored, and only the strategies the
        job asked for are taken."""
        known = set(available())
        if spec.kind == "train":       # one folder; the reported name only tags the model
            told = result.get("strategy")
            names = [told if isinstance(told, str) and told in known else spec.strategy]
        else:
            reported = result.get("artifacts") if isinstance(result.get("artifacts"), dict) else {}
            names = [name for name in spec.strategies if name in reported]
        folder, sealed = JobFolder(job_dir(self.settings, job)), {}
        for strategy in [name for name in names if name in known]:
            try:
                path, skipped = folder.seal(self.settings.home, job.tenant_id, artifact_parts(spec.kind, strategy))
            except (UnsafeEntry, OSError) as exc:
                if diskfull.is_disk_full(exc):      # not the artifact's fault: the job fails (worker._finish)
                    raise
                store.add_event(s, job, "log", f"The {strategy} artifact was refused: {exc.strerror or exc}.",
                                level="warning")
                continue
            if skipped:
                store.add_event(s, job, "log", f"Left out of the {strategy} artifact (only regular files are "
                                f"kept): {'; '.join(skipped[:20])}.", {"skipped": skipped[:200]}, level="warning")
            sealed[strategy] = str(path)
        return sealed

    def _succeed(self, s, job: Job, result: dict) -> None:
        spec = JobSpec.model_validate(job.spec)
        if spec.is_bench:
            self._succeed_bench(s, job, spec, result)
            return
        if spec.is_batch:
            self._succeed_batch(s, job, spec, result)
            return
        # the few test texts shown as examples of errors: sealed before they reach the database
        result = sealed_fields.seal(result, cipher(self.settings.home, job.tenant_id))
        sealed = self._sealed_artifacts(s, job, spec, result)
        if spec.kind == "train" and not sealed:
            self._fail(s, job, "invalid_artifact", "The job finished without a model folder the worker could seal.")
            return
        ids = {}
        for strategy, path in sealed.items():
            model_id = tuned_model_id(job, spec, strategy)
            metrics = result.get("metrics") if spec.kind == "train" else \
                next((r for r in result.get("results", []) if r.get("strategy") == strategy), {})
            if s.get(TunedModel, model_id) is None:
                s.add(TunedModel(id=model_id, tenant_id=job.tenant_id, job_id=job.id, base_model=spec.model,
                                 strategy=strategy, artifact_path=path, metrics=metrics or {},
                                 name=tuned_model_name(s, job, spec, strategy)))
            ids[strategy] = model_id
        job.result = {**result, "artifacts": sealed, "models": ids}
        if spec.kind == "train":
            found = store_result_file(s, self.settings.home, job)
            job.result = {**job.result, "result_files": [found] if found else []}
        pick = next(iter(ids)) if spec.kind == "train" else result.get("recommended")
        job.fine_tuned_model = ids.get(pick) if isinstance(pick, str) else None
        summary = result.get("metrics", {})
        if summary:
            store.add_event(s, job, "metrics", _headline(summary) + ".",
                            {k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        store.transition(s, job, JobStatus.SUCCEEDED, f"Job succeeded: {job.fine_tuned_model or 'comparison ready'}.")
        webhooks.enqueue(s, job, "succeeded")

    def _succeed_bench(self, s, job: Job, spec: JobSpec, result: dict) -> None:
        """The benchmark stored as this worker's newest run (so the Infrastructure page shows it,
        compared with the run before) and kept whole in the job's result."""
        try:
            stored = bench.save(result.get("benchmark"), spec, self.settings.home)
        except bench.InvalidBenchmark as exc:
            self._fail(s, job, "invalid_result", f"The benchmark's result was refused: {exc}. Nothing was stored; "
                                                 "run the job again, and report it if it happens again.")
            return
        job.result = {"kind": BENCH, "benchmark": stored}
        store.add_event(s, job, "log", bench.summary(stored) + ".",
                        {"run": stored.get("id"), "worker": stored.get("worker"),
                         "regressions": (stored.get("comparison") or {}).get("regressions") or []})
        store.transition(s, job, JobStatus.SUCCEEDED, "Job succeeded: the benchmark is on the Infrastructure page.")
        webhooks.enqueue(s, job, "succeeded")

    def _succeed_batch(self, s, job: Job, spec: JobSpec, result: dict) -> None:
        """The output sealed (encrypted) from the folder the worker assigned, the predictions charged."""
        folder = JobFolder(job_dir(self.settings, job))
        try:
            path, _ = folder.seal(self.settings.home, job.tenant_id, [ARTIFACT])
        except (UnsafeEntry, OSError) as exc:
            if diskfull.is_disk_full(exc):
                raise
            self._fail(s, job, "invalid_result", f"The predictions file was refused: {exc.strerror or exc}.")
            return
        rows = batch_predict.rows_of(result)
        charged = batch_predict.bill_predictions(s, job, rows)
        name = batch_predict.OUTPUT_NAMES[spec.output_format]
        job.result = {"kind": BATCH, "rows": rows, "rows_per_s": result.get("rows_per_s"),
                      "seconds": result.get("seconds"), "labels": [str(x) for x in (result.get("labels") or [])][:1000],
                      "output": {"path": str(path), "filename": name, "format": spec.output_format,
                                 "media_type": batch_predict.MEDIA_TYPES[spec.output_format]},
                      "predictions_charged": charged}
        store.add_event(s, job, "log", f"{rows:,} rows labelled"
                        + (f" ({result['rows_per_s']:,.0f} rows/s)" if isinstance(result.get("rows_per_s"), (int, float))
                           else "") + ".", {"rows": rows})
        store.transition(s, job, JobStatus.SUCCEEDED, f"Job succeeded: {rows:,} predictions ready to download.")
        webhooks.enqueue(s, job, "succeeded")

    def _fail_disk_full(self, s, job: Job, doing: str) -> None:
        """Fail the job at once (no retry: it would fill the disk again), with a message that says
        where space is needed; what the attempt half-wrote is removed, its last checkpoint kept."""
        message = diskfull.message(self.settings.home, doing)      # measured before cleaning up
        try:
            JobFolder(job_dir(self.settings, job)).discard_partial()
        except OSError:
            log.exception("could not remove a job's partial files", extra={"job": job.id})
        log.error("job failed: the disk under TUNELAB_HOME is full", extra={"job": job.id, "doing": doing})
        self._fail(s, job, diskfull.CODE, message)

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
