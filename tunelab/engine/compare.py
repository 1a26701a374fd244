"""Running several strategies on the same splits and recommending one, for every task.

Cost is compute time: training seconds plus, for classifiers, the time to serve 10,000
predictions at the measured latency (so a zero-training strategy with a slow model is not free).
The recommendation is the cheapest strategy whose quality (the task's metric: macro-F1 for
classifiers, token F1 of held-out answers for chat, preference accuracy for DPO) is within the
task's material difference of the best; a smaller difference is within the noise of a test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..strategies import ConfigError, PreparedData, Task, default_compare
from ..training.progress import ProgressEvent, ProgressFn, null_progress
from .budget import Budget


@dataclass
class Comparison:
    results: list[dict]
    recommended: str | None
    reason: str
    task: str = "text-classification"

    def to_dict(self) -> dict:
        return {"results": self.results, "recommended": self.recommended, "reason": self.reason, "task": self.task}


def recommend(rows: list[dict], task: Task) -> tuple[str | None, str]:
    done = [r for r in rows if "error" not in r]
    if not done:
        return None, "no strategy finished"
    label, material = task.quality_label, task.material
    best = max(done, key=lambda r: r["quality"])
    close = [r for r in done if r["quality"] >= best["quality"] - material]
    pick = min(close, key=lambda r: r["cost_seconds"])
    if pick is best:
        others = [r for r in done if r is not best]
        gap = best["quality"] - max((r["quality"] for r in others), default=best["quality"])
        return pick["strategy"], (f"{pick['strategy']} has the best {label} ({pick['quality']:.3f})"
                                   + (f", {gap:.3f} ahead of the next" if others else "")
                                   + f" and no cheaper strategy comes within {material:.2f} of it.")
    ratio = best["cost_seconds"] / max(pick["cost_seconds"], 1e-9)
    return pick["strategy"], (f"{pick['strategy']} reaches {label} {pick['quality']:.3f}, within "
                              f"{material:.2f} of the best ({best['strategy']}, {best['quality']:.3f}), "
                              f"at {ratio:.1f}x less compute.")


def finish(rows: list[dict], task: Task) -> Comparison:
    """Relative costs and the recommendation over finished rows (also for a compare made of jobs)."""
    cheapest = min((r["cost_seconds"] for r in rows if "error" not in r), default=0) or 1e-9
    for r in rows:
        if "error" not in r:
            r["relative_cost"] = r["cost_seconds"] / max(cheapest, 1e-9)
    recommended, reason = recommend(rows, task)
    return Comparison(rows, recommended, reason, task.name)


def compare(model, data: PreparedData, strategies: list[str] | None = None, *, params: dict | None = None,
            out_root: Path | None = None, auto_fit: bool = False,
            progress: ProgressFn = null_progress, budget: Budget | None = None,
            exhaustive: bool = False) -> Comparison:
    """params: strategy name -> its hyperparameter overrides. No strategies: the task's defaults."""
    from .run import run_strategy     # here: `finish` serves the web's tables without loading torch

    names = list(strategies or default_compare(data.task))
    rows = []
    for i, name in enumerate(names):
        progress(ProgressEvent("compare", i, len(names), message=name))
        try:
            result = run_strategy(model, data, name, (params or {}).get(name),
                                  out=out_root / name if out_root else None, auto_fit=auto_fit,
                                  work_dir=(out_root / name) if out_root else None, progress=progress)
            rows.append({**data.task.summarize(result.strategy, result.metrics), "task": data.task.name})
        except ConfigError as exc:   # e.g. qlora without CUDA: reported in the table, others go on
            rows.append({"strategy": name, "error": str(exc)})
    progress(ProgressEvent("compare", len(names), len(names)))
    return finish(rows, data.task)
