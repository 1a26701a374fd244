"""The worker's side of a hardware benchmark job (kind bench-hardware): the job process measures
the machine (engine.sweep.measure, under the sandbox) and reports the result; the worker checks
its shape, stores it with hardware.store (which the sandboxed process cannot write: nothing of
TUNELAB_HOME but the job's own folders is visible to it), compared with the worker's previous run,
and keeps it in the job's result for the job page.

What the job process sends is taken field by field: the run's id, its worker and its time are the
worker's (an id names the stored file), and every figure and model row must read as the API's
contract describes it, so that a malformed result can never break the Infrastructure page of
every tenant.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from ..contract import HardwareFigure, ModelThroughput
from ..hardware import store
from .spec import JobSpec

MAX_RESULT_BYTES = 2_000_000


class InvalidBenchmark(ValueError):
    pass


def checked(raw: object, spec: JobSpec) -> dict:
    """The reported benchmark as it will be stored (without id, worker, time: save() sets them)."""
    if not isinstance(raw, dict):
        raise InvalidBenchmark("the job reported no benchmark")
    if len(json.dumps(raw, default=str)) > MAX_RESULT_BYTES:
        raise InvalidBenchmark("the reported benchmark is too large")
    figures, models, device = raw.get("figures"), raw.get("models"), raw.get("device")
    if not isinstance(figures, list) or not figures or not isinstance(models, list) or not isinstance(device, dict):
        raise InvalidBenchmark("the reported benchmark has no figures, models or device")
    try:
        for f in figures:
            HardwareFigure.model_validate(f)
        for m in models:
            ModelThroughput.model_validate(m)
    except ValidationError as exc:
        raise InvalidBenchmark(f"a reported figure does not read: {exc.errors()[0].get('msg')}") from None
    seconds = raw.get("seconds")
    return {"quick": spec.quick, "sweep": spec.sweep,
            "seconds": float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None,
            "device": device, "figures": figures, "models": models}


def save(raw: object, spec: JobSpec, home: Path) -> dict:
    """Store the job's benchmark as this worker's newest run; returns it as stored (with its
    comparison against the run before)."""
    path = store.save(checked(raw, spec), home)
    return json.loads(path.read_text())


def summary(stored: dict) -> str:
    """One line for the job's events: the headline figures and what got slower."""
    by_name = {f.get("name"): f for f in stored.get("figures") or []}
    parts = []
    for name in ("matmul_fp32", "matmul_fp32_gpu", "memory_bandwidth", "disk_read"):
        f = by_name.get(name)
        if f and isinstance(f.get("median"), (int, float)):
            parts.append(f"{f.get('label') or name} {f['median']:,.1f} {f.get('unit') or ''}".strip())
    rows = [m for m in stored.get("models") or [] if not m.get("error")]
    if rows:
        parts.append(f"{len(rows)} model run{'s' if len(rows) != 1 else ''} timed")
    comparison = stored.get("comparison") or {}
    if comparison.get("regressions"):
        parts.append("slower than the run before: " + ", ".join(comparison["regressions"]))
    elif comparison:
        parts.append("nothing slower than the run before")
    return "Benchmark stored for " + str(stored.get("worker")) + (": " + "; ".join(parts) if parts else "")
