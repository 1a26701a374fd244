"""Run several strategies on the same splits and recommend one.

Cost is compute time: training seconds plus the time to serve 10,000 predictions at the
measured latency (so a zero-training strategy with a slow model is not free). The
recommendation is the cheapest strategy whose macro-F1 is within MATERIAL of the best; a
difference smaller than that is within the noise of a test split of usual size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .models import ModelSpec
from .runner import PreparedData, RunResult, run_strategy
from .strategies import ConfigError
from .training.progress import ProgressEvent, ProgressFn, null_progress

MATERIAL = 0.02          # macro-F1 points that count as a real quality difference
SERVED_PREDICTIONS = 10_000


@dataclass
class Comparison:
    results: list[dict]
    recommended: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"results": self.results, "recommended": self.recommended, "reason": self.reason}


def cost_seconds(metrics: dict) -> float:
    return metrics["train_seconds"] + metrics["latency_ms_per_example"] / 1000 * SERVED_PREDICTIONS


def summarize(result: RunResult) -> dict:
    m = result.metrics
    return {"strategy": result.strategy, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
            "train_seconds": m["train_seconds"], "latency_ms": m["latency_ms_per_example"],
            "trainable_params": m["trainable_params"], "peak_rss_mb": m["peak_rss_mb"],
            "cost_seconds": cost_seconds(m)}


def recommend(rows: list[dict]) -> tuple[str | None, str]:
    done = [r for r in rows if "error" not in r]
    if not done:
        return None, "no strategy finished"
    best = max(done, key=lambda r: r["macro_f1"])
    close = [r for r in done if r["macro_f1"] >= best["macro_f1"] - MATERIAL]
    pick = min(close, key=lambda r: r["cost_seconds"])
    if pick is best:
        others = [r for r in done if r is not best]
        gap = best["macro_f1"] - max((r["macro_f1"] for r in others), default=best["macro_f1"])
        return pick["strategy"], (f"{pick['strategy']} has the best macro-F1 ({pick['macro_f1']:.3f})"
                                   + (f", {gap:.3f} ahead of the next" if others else "")
                                   + " and no cheaper strategy comes within "
                                   f"{MATERIAL:.2f} of it.")
    ratio = best["cost_seconds"] / max(pick["cost_seconds"], 1e-9)
    return pick["strategy"], (f"{pick['strategy']} reaches macro-F1 {pick['macro_f1']:.3f}, within "
                              f"{MATERIAL:.2f} of the best ({best['strategy']}, {best['macro_f1']:.3f}), "
                              f"at {ratio:.1f}x less compute.")


def compare(model: ModelSpec, data: PreparedData, strategies: list[str], *, params: dict | None = None,
            out_root: Path | None = None, auto_fit: bool = False,
            progress: ProgressFn = null_progress) -> Comparison:
    """params: strategy name -> its hyperparameter overrides."""
    rows = []
    for i, name in enumerate(strategies):
        progress(ProgressEvent("compare", i, len(strategies), message=name))
        try:
            result = run_strategy(model, data, name, (params or {}).get(name),
                                  out=out_root / name if out_root else None, auto_fit=auto_fit,
                                  work_dir=(out_root / name) if out_root else None, progress=progress)
            rows.append(summarize(result))
        except ConfigError as exc:   # e.g. qlora without CUDA: reported in the table, others go on
            rows.append({"strategy": name, "error": str(exc)})
    progress(ProgressEvent("compare", len(strategies), len(strategies)))
    cheapest = min((r["cost_seconds"] for r in rows if "error" not in r), default=0) or 1e-9
    for r in rows:
        if "error" not in r:
            r["relative_cost"] = r["cost_seconds"] / max(cheapest, 1e-9)
    recommended, reason = recommend(rows)
    return Comparison(rows, recommended, reason)
