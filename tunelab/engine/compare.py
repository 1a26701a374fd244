"""Running several strategies on the same splits and recommending one, for every task.

Cost is compute time: training seconds plus, for classifiers, the time to serve 10,000
predictions at the measured latency (so a zero-training strategy with a slow model is not free).
The recommendation is the cheapest strategy whose quality (the task's metric: macro-F1 for
classifiers, token F1 of held-out answers for chat, preference accuracy for DPO) is within the
task's material difference of the best, or that the test split cannot tell apart from the best
(recommend.py).

A comparison spends little: candidates run cheapest first (by pre-flight's estimate); one whose
learning curve shows it cannot come within the material difference of the best so far is
stopped (pruning.py), and a budget skips what would not fit in it and stops what runs past it.
`exhaustive` runs every candidate to the end (the budget still holds when one is given).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation.summary import summarize
from ..strategies import ConfigError, PreparedData, default_compare
from ..training.progress import ProgressEvent, ProgressFn, null_progress
from .budget import Budget
from .pruning import CandidateStopped, Guard
from .recommend import recommend

__all__ = ["Comparison", "compare", "finish", "recommend"]


@dataclass
class Comparison:
    results: list[dict]
    recommended: str | None
    reason: str
    task: str = "text-classification"
    budget: dict | None = None
    exhaustive: bool = False
    order: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"results": self.results, "recommended": self.recommended, "reason": self.reason, "task": self.task,
                "budget": self.budget, "exhaustive": self.exhaustive, "order": self.order}


def finish(rows: list[dict], task, *, budget: dict | None = None, exhaustive: bool = False) -> Comparison:
    """Relative costs and the recommendation over finished rows (also for a compare made of jobs).
    In-memory keys ("_paired": per-row predictions) are used here and dropped."""
    cheapest = min((r["cost_seconds"] for r in rows if "error" not in r), default=0) or 1e-9
    for r in rows:
        if "error" not in r:
            r["relative_cost"] = r["cost_seconds"] / max(cheapest, 1e-9)
    recommended, reason = recommend(rows, task)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return Comparison(clean, recommended, reason, task.name, budget, exhaustive, [r["strategy"] for r in rows])


def compare(model, data: PreparedData, strategies: list[str] | None = None, *, params: dict | None = None,
            out_root: Path | None = None, auto_fit: bool = False,
            progress: ProgressFn = null_progress, budget: Budget | None = None,
            exhaustive: bool = False) -> Comparison:
    """params: strategy name -> its hyperparameter overrides. No strategies: the task's defaults."""
    from .run import execute, plan_strategy   # here: `finish` serves the web's tables without loading torch

    names = list(dict.fromkeys(strategies or default_compare(data.task)))
    rows, planned = [], []
    t0 = time.monotonic()            # the budget covers planning too
    for i, name in enumerate(names):
        progress(ProgressEvent("plan", i, len(names), message=f"estimating {name}"))
        try:
            planned.append(plan_strategy(model, data, name, (params or {}).get(name),
                                         out=out_root / name if out_root else None, auto_fit=auto_fit,
                                         work_dir=(out_root / name) if out_root else None, progress=progress))
        except ConfigError as exc:   # e.g. qlora without CUDA: reported in the table, others go on
            rows.append({"strategy": name, "error": str(exc)})
    planned.sort(key=lambda p: p.plan.estimate.seconds)        # cheapest first
    limit = budget.limit_seconds() if budget is not None else None
    for i, run in enumerate(planned):
        progress(ProgressEvent("compare", i, len(planned), message=run.name))
        elapsed, predicted = time.monotonic() - t0, run.plan.estimate.seconds
        if limit is not None and elapsed + predicted > limit:
            rows.append(skipped(run.name, predicted, elapsed, limit, budget))
            continue
        guard = Guard(run.name, data.task, [r for r in rows if "error" not in r], progress,
                      prune=not exhaustive, deadline=None if limit is None else t0 + limit, budget=budget)
        run.ctx.progress = guard
        try:
            result = execute(run, out_root / run.name if out_root else None)
        except CandidateStopped as exc:
            rows.append(exc.row())
            continue
        except ConfigError as exc:
            rows.append({"strategy": run.name, "error": str(exc)})
            continue
        row = {**data.task.row(result.strategy, result.metrics), "task": data.task.name,
               "predicted_seconds": round(predicted, 1)}
        if "_paired" in result.notes:
            row["_paired"] = result.notes["_paired"]
        words = summarize(result.metrics)       # the results in a person's words (evaluation/summary.py)
        if words is not None:
            row["in_words"] = words.to_dict()
        rows.append(row)
    progress(ProgressEvent("compare", len(planned), len(planned)))
    spent = time.monotonic() - t0
    return finish(rows, data.task, exhaustive=exhaustive,
                  budget=None if budget is None or not budget.limited else
                  {**budget.to_dict(), "spent_seconds": round(spent, 1)})


def skipped(name: str, predicted: float, elapsed: float, limit: float, budget: Budget) -> dict:
    reason = (f"skipped: its estimate (~{predicted:.0f} s) is more than what is left of the budget "
              f"({max(limit - elapsed, 0):.0f} s of {budget.describe()})")
    return {"strategy": name, "error": reason, "skipped": True, "reason": reason,
            "predicted_seconds": round(predicted, 1)}
