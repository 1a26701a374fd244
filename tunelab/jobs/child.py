"""The job process: `python -m tunelab.jobs.child SPEC.json`.

Runs one job through the engine's entry points (run / compare, or the hardware benchmark's
measure) with no database access, and reports to its worker as JSON lines on stdout: progress
ticks, checkpoints, the result, or an error. Its exit status tells the worker what happened (see
EXIT_*): the worker retries only infrastructure failures, never a user's bad data or configuration.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from ..training import launch

EXIT_OK, EXIT_DATA, EXIT_CONFIG, EXIT_STOPPED = 0, 3, 4, 5

_out_lock = threading.Lock()
_silent = False         # a rank other than 0 of a data-parallel job: rank 0 speaks for the job
_crash: str | None = None       # a rank's unexpected error, for the launcher's report


def emit(type_: str, **data) -> None:
    if _silent:
        return
    with _out_lock:
        sys.stdout.write(json.dumps({"type": type_, **data}, default=str) + "\n")
        sys.stdout.flush()


def _die_with_parent(parent: int) -> None:
    """A worker killed with SIGKILL must not leave its job running on (two runs would then
    share one checkpoint folder when the job is claimed again)."""
    launch.die_with(parent)


def _on_sigterm(signum, frame) -> None:
    from ..training.control import request_stop

    # The loop writes a checkpoint at its next step and raises TrainingStopped; strategies
    # without a loop finish quickly or are killed at the end of the grace period.
    request_stop(os.environ.get("TUNELAB_STOP_REASON", "cancelled"))


class BenchStopped(Exception):
    """SIGTERM during a hardware benchmark: it has no checkpoint to write, so it stops at once (a
    model burst running in its own process is killed with it, by subprocess.run)."""


def _stop_bench(signum, frame) -> None:
    raise BenchStopped(os.environ.get("TUNELAB_STOP_REASON", "cancelled"))


BENCH_FAILED = ("The hardware benchmark failed on the worker: {error}. Nothing was stored. Check that the worker "
                "is not short of memory or disk (its job folder must take a 128 MB probe file), then run the job "
                "again; `tunelab bench hardware --quick` on the worker's machine shows the whole error.")


def run_bench(spec, progress) -> int:
    """A hardware benchmark job: the figures of `tunelab bench hardware`, measured here (the worker's
    machine, under the job's sandbox) and sent back whole; the worker stores them (this process
    cannot write TUNELAB_HOME/hardware). The disk probe writes in the job's work folder."""
    from ..engine.sweep import measure

    job = spec.job
    previous = signal.signal(signal.SIGTERM, _stop_bench)
    emit("phase", phase="running", task="bench-hardware", quick=job.quick, sweep=job.sweep)
    t0 = time.monotonic()

    def with_eta(event) -> None:
        if 0 < event.step < event.total_steps and event.eta_s is None:
            elapsed = time.monotonic() - t0
            event.eta_s = round(elapsed / event.step * (event.total_steps - event.step), 1)
        progress(event)

    work = Path(spec.work_dir)
    try:
        work.mkdir(parents=True, exist_ok=True)
        result = measure(quick=job.quick, home=work, progress=with_eta, rows=None if job.sweep else [], save=False)
    except BenchStopped as exc:
        emit("stopped", step=None, reason=str(exc))
        return EXIT_STOPPED
    except Exception as exc:    # a probe that cannot run here fails the same way again: no retry
        emit("error", code="benchmark_failed", message=BENCH_FAILED.format(error=f"{type(exc).__name__}: {exc}"))
        traceback.print_exc(file=sys.stderr)
        return EXIT_CONFIG
    finally:       # the usual handler again (it only records a stop): a finished result is not lost
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    emit("result", kind="bench-hardware", benchmark=result)
    return EXIT_OK


def run(spec_path: Path) -> int:
    from ..data.errors import DataError
    from ..engine import DataSpec, compare, prepare_data, run_strategy
    from ..models import resolve_model
    from ..strategies.base import ConfigError
    from ..training.control import TrainingStopped
    from .spec import ChildSpec

    spec = ChildSpec.model_validate_json(spec_path.read_text())
    job = spec.job

    from ..training.progress import PhaseEta

    eta = PhaseEta()     # every long step gets an ETA (encoding texts too), not only training loops

    def progress(event) -> None:
        event = eta(event)
        if event.phase == "checkpoint":
            emit("checkpoint", step=event.step, total_steps=event.total_steps, epoch=event.epoch, loss=event.loss)
        else:
            emit("progress", **event.to_dict())

    if job.is_bench:
        return run_bench(spec, progress)
    if job.is_batch:
        from .batch_predict import run as run_batch

        return {"ok": EXIT_OK, "data": EXIT_DATA, "config": EXIT_CONFIG, "stopped": EXIT_STOPPED}[run_batch(spec, emit)]
    try:
        model = resolve_model(job.model)
        data = prepare_data(DataSpec(Path(spec.train_file), Path(spec.test_file) if spec.test_file else None,
                                     spec.text_column, spec.label_column, limit=job.limit, seed=job.seed), model)
        emit("phase", phase="running", task=data.task.name, train_rows=len(data.splits.train),
             validation_rows=len(data.splits.validation), test_rows=len(data.splits.test),
             labels=data.splits.label_names)
        out = Path(spec.out_dir)
        if int(os.environ.get("RANK", 0)) > 0:      # what a rank other than 0 writes is thrown away
            out = Path(spec.work_dir) / f"rank-{os.environ['RANK']}-out"
        if job.kind == "compare":
            result = compare(model, data, job.strategies, params=job.strategy_params, out_root=out,
                             auto_fit=job.auto_fit, progress=progress, budget=job.budget(),
                             exhaustive=job.exhaustive)
            emit("result", kind="compare", **result.to_dict(),
                 artifacts={r["strategy"]: str(out / r["strategy"]) for r in result.results if "error" not in r})
        else:
            result = run_strategy(model, data, job.strategy, job.params, out=out, work_dir=Path(spec.work_dir),
                                  auto_fit=job.auto_fit, progress=progress)
            emit("result", kind="train", strategy=result.strategy, metrics=result.metrics,
                 artifacts={result.strategy: str(out)},
                 resumed_from_step=result.notes.get("resumed_from_step", 0), samples=result.samples)
        return EXIT_OK
    except DataError as exc:
        emit("error", code="invalid_training_file", message=str(exc), codes=exc.codes)
        return EXIT_DATA
    except TrainingStopped as exc:
        emit("stopped", step=exc.step, reason=exc.reason)
        return EXIT_STOPPED
    except ConfigError as exc:
        emit("error", code="invalid_configuration", message=str(exc))
        return EXIT_CONFIG
    except Exception as exc:    # an infrastructure failure as far as we know: the worker may retry
        message = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
        if launch.is_rank():        # a rank's crash: the launcher restarts the ranks, or reports it
            global _crash
            _crash = message
        else:
            emit("error", code="internal_error", message=message)
        return 1


def run_ranks(spec_path: Path, processes: int) -> int:
    """A data-parallel job: this process becomes the agent of `processes` ranks, each running this
    module on the same spec (training/launch.py); rank 0 reports for the job."""
    from ..settings import get_settings

    cpus = int(os.environ.get("TUNELAB_JOB_CPUS") or os.cpu_count() or 1)
    return launch.launch(["-m", "tunelab.jobs.child", str(spec_path)], processes,
                         max_restarts=get_settings().ddp_max_restarts, cpus=cpus,
                         report=lambda message: emit("error", code="internal_error", message=message))


def run_rank(spec_path: Path) -> int:
    """One rank: dies with its agent; the ranks other than 0 say nothing; the status is recorded for
    the agent (an answer such as a data error must not be retried as if the rank had crashed)."""
    from ..training.distributed import RankDone

    global _silent
    launch.join_as_rank()
    _silent = int(os.environ["RANK"]) > 0
    try:
        code = run(spec_path)
    except RankDone:
        code = EXIT_OK
    return launch.rank_exit(code, _crash)


def _processes(spec_path: Path) -> int:
    return int(json.loads(spec_path.read_text()).get("job", {}).get("processes", 1))


def main() -> None:
    from ..logs import quiet_libraries

    quiet_libraries()      # progress reaches the worker as events, not as library bars on stderr
    signal.signal(signal.SIGTERM, _on_sigterm)
    spec_path = Path(sys.argv[1])
    if launch.is_rank():
        sys.exit(run_rank(spec_path))
    parent = int(os.environ.get("TUNELAB_PARENT_PID", os.getppid()))
    _die_with_parent(parent)
    processes = _processes(spec_path)
    sys.exit(run_ranks(spec_path, processes) if processes > 1 else run(spec_path))


if __name__ == "__main__":
    main()
