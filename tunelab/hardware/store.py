"""Hardware benchmark results: one JSON file per run under TUNELAB_HOME/hardware/<worker>/, kept
(the history is the point: a machine that got 20% slower since last week is news), and compared
with the run before on the same worker.

A result (what `tunelab bench hardware` writes, what the Infrastructure page and API read):

    {"version": 1, "id": "20261203T210000Z", "created": "2026-12-03T21:00:00+00:00",
     "worker": "host-a", "quick": true, "seconds": 95.1,
     "device": {"kind": "cpu", "name": "AMD EPYC 7B13", "cores": 2, "flags": ["avx2", ...],
                "torch": "2.13.0", "bf16_native": false, "gpus": [{"name":..., "memory_mb":..., "driver":...}]},
     "figures": [{"name": "matmul_fp32", "label": "dense matmul, fp32", "unit": "GFLOP/s",
                  "median": 101.2, "spread": 0.03, "runs": 7, "noisy": false, "higher_is_better": true}, ...],
     "models": [{"model": "minilm", "strategy": "full", "precision": "fp32", "batch": 32,
                 "seq_len": 24, "steps": 6, "samples_per_s": ..., "tokens_per_s": ...,
                 "step_p50_s": ..., "step_p95_s": ..., "peak_mb": ..., "flops_per_token": ...,
                 "mfu": 0.31, "mfu_of": "matmul_fp32", "usd_per_million_tokens": ...}, ...],
     "comparison": {"against": "<id of the previous run>", "threshold": 0.15,
                    "changes": [{"name": "matmul_fp32", "ratio": 0.8, "regressed": true}, ...],
                    "regressions": ["matmul_fp32"]}}

`spread` is (p90 - p10) / median of the runs; a figure with a spread over NOISY_SPREAD says so
rather than pretending to a precision it does not have.
"""

from __future__ import annotations

import json
import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path

VERSION = 1
REGRESSION = 0.15          # a figure this much worse than the run before is flagged
NOISY_SPREAD = 0.10
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def root(home: Path | None = None) -> Path:
    from ..settings import get_settings

    return Path(home or get_settings().home) / "hardware"


def worker_name() -> str:
    """This worker's folder: TUNELAB_WORKER_NAME, else the host name (made safe for a path)."""
    name = os.environ.get("TUNELAB_WORKER_NAME") or socket.gethostname() or "worker"
    return _SAFE.sub("-", name)[:64].strip(".-") or "worker"


def new_id(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")


def history(worker: str | None = None, home: Path | None = None) -> list[dict]:
    """Every stored run of a worker (all workers when None), oldest first. Unreadable files are
    skipped: one bad file must not hide the rest."""
    base = root(home)
    folders = [base / worker] if worker else sorted(p for p in base.glob("*") if p.is_dir())
    out = []
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            try:
                result = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(result, dict) and result.get("version") == VERSION:
                out.append(result)
    return sorted(out, key=lambda r: (r.get("created", ""), r.get("id", "")))


def latest(worker: str | None = None, home: Path | None = None) -> dict | None:
    runs = history(worker, home)
    return runs[-1] if runs else None


def figure(result: dict | None, name: str) -> float | None:
    for f in (result or {}).get("figures", []):
        if f.get("name") == name:
            return f.get("median")
    return None


def compare(new: dict, old: dict | None, threshold: float = REGRESSION) -> dict | None:
    """Each figure and model throughput of `new` over `old`'s; worse by more than `threshold`
    is a regression (for a time, higher is worse)."""
    if not old:
        return None
    changes = []
    before = {f["name"]: f for f in old.get("figures", [])}
    for f in new.get("figures", []):
        prev = before.get(f["name"])
        if prev and prev.get("median") and f.get("median") is not None:
            changes.append(_change(f["name"], f["median"], prev["median"], f.get("higher_is_better", True),
                                   threshold))
    before_models = {(m["model"], m["strategy"]): m for m in old.get("models", [])}
    for m in new.get("models", []):
        prev = before_models.get((m["model"], m["strategy"]))
        if prev and prev.get("tokens_per_s") and m.get("tokens_per_s") is not None:
            changes.append(_change(f"{m['model']}/{m['strategy']} tokens/s", m["tokens_per_s"],
                                   prev["tokens_per_s"], True, threshold))
    return {"against": old.get("id"), "against_created": old.get("created"), "threshold": threshold,
            "changes": changes, "regressions": [c["name"] for c in changes if c["regressed"]]}


def _change(name: str, value: float, previous: float, higher_is_better: bool, threshold: float) -> dict:
    ratio = value / previous
    worse = (1 - ratio) if higher_is_better else (ratio - 1)
    return {"name": name, "value": value, "previous": previous, "ratio": round(ratio, 4),
            "regressed": worse > threshold}


def save(result: dict, home: Path | None = None) -> Path:
    """Compare with the worker's latest run, then write atomically (a crash leaves no half file)."""
    result = {**result, "version": VERSION}
    result.setdefault("id", new_id())
    result.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    result.setdefault("worker", worker_name())
    result["comparison"] = compare(result, latest(result["worker"], home))
    folder = root(home) / _SAFE.sub("-", result["worker"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return path
