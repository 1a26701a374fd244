"""Running one strategy on a prepared dataset, whatever its task: pre-flight, fit under the
resource meter, the task's evaluation, the model folder. The CLI, the job child, the API and the
web all come here."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import write_artifact
from ..billing.rates import usd_per_million
from ..evaluation.summary import error_examples
from ..hardware.efficiency import efficiency, matmul_precision
from ..hardware.probes import peak_gflops
from ..models.device import best_precision, default_device
from ..strategies import PreparedData, RunContext, Strategy, parse_params, resolve
from ..training.costs import ResourceMeter
from ..training.progress import ProgressFn, null_progress
from .planning import Plan, preflight


def tunelab_home() -> Path:
    return Path(os.environ.get("TUNELAB_HOME", Path.home() / ".tunelab"))


@dataclass
class RunResult:
    strategy: str
    metrics: dict
    plan: Plan
    out: Path | None = None
    notes: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)


def make_context(model, data: PreparedData, strategy_name: str, params, *, work_dir: Path,
                 progress: ProgressFn = null_progress, seed: int = 0) -> tuple[Strategy, RunContext]:
    """The strategy `strategy_name` means on this data's task, and its run context."""
    strategy = resolve(strategy_name, data.task)
    device = default_device()
    ctx = RunContext(model=model, splits=data.splits, params=parse_params(strategy, params).for_data(data.splits),
                     work_dir=Path(work_dir), cache_dir=tunelab_home() / "cache", device=device,
                     precision=best_precision(device), seed=seed, progress=progress)
    return strategy, ctx


@dataclass
class Planned:
    """A run checked and estimated by pre-flight, not started: what a comparison orders and skips by."""
    strategy: Strategy
    ctx: RunContext
    plan: Plan
    data: PreparedData
    work: Path

    @property
    def name(self) -> str:
        return self.strategy.name


def plan_strategy(model, data: PreparedData, strategy_name: str, params=None, *, work_dir: Path | None = None,
                  out: Path | None = None, auto_fit: bool = False,
                  progress: ProgressFn = null_progress) -> Planned:
    # Checkpoints live with the output, so rerunning the same command resumes; a run with no
    # output folder gets a private scratch folder and can't pick up another run's checkpoints.
    work = Path(work_dir or out or tempfile.mkdtemp(prefix=f"tunelab-{strategy_name}-"))
    strategy, ctx = make_context(model, data, strategy_name, params, work_dir=work, progress=progress,
                                 seed=data.spec.seed)
    plan, ctx, strategy = preflight(ctx, strategy, auto_fit=auto_fit)
    return Planned(strategy, ctx, plan, data, work)


def execute(planned: Planned, out: Path | None = None) -> RunResult:
    """Fit under the resource meter, evaluate on the test split, write the model folder."""
    strategy, ctx, plan, data, model = planned.strategy, planned.ctx, planned.plan, planned.data, planned.ctx.model
    with ResourceMeter() as meter:
        predictor = strategy.fit(ctx)
    cost = meter.record
    metrics, samples = strategy.evaluate(predictor, ctx, ctx.progress)
    notes = ctx.notes
    metrics.update(_errors_in_words(predictor, ctx))
    metrics.update(strategy=strategy.name, task=data.task.name, train_seconds=cost.wall_seconds,
                   cpu_seconds=cost.cpu_seconds, gpu_seconds=cost.gpu_seconds, peak_rss_mb=cost.peak_rss_mb,
                   peak_gpu_mb=cost.peak_gpu_mb,
                   trainable_params=strategy.trainable_params(predictor, ctx, cost.trainable_params),
                   total_params=int(notes.get("total_params", model.parameters)),
                   tokens_processed=int(notes.get("tokens_processed", 0)),
                   predicted_peak_mb=plan.estimate.peak_mb, predicted_seconds=plan.estimate.seconds)
    if notes.get("tokens_per_second") is not None:
        metrics["tokens_per_second"] = notes["tokens_per_second"]
    eff = job_efficiency(notes.get("work"), ctx, cost.peak_rss_mb)
    if eff is not None:
        metrics.update(efficiency=eff, mfu=eff["mfu"])
        metrics.setdefault("tokens_per_second", eff["tokens_per_s"])
    if out is not None:
        _write(Path(out), predictor, strategy, ctx, data, plan, metrics, samples)
        # The model is safe in the artifact: the checkpoints (weights + optimizer state) are not needed.
        shutil.rmtree(planned.work / "checkpoints", ignore_errors=True)
    return RunResult(strategy.name, metrics, plan, out, notes, samples)


def run_strategy(model, data: PreparedData, strategy_name: str, params=None, *, out: Path | None = None,
                 work_dir: Path | None = None, auto_fit: bool = False,
                 progress: ProgressFn = null_progress) -> RunResult:
    return execute(plan_strategy(model, data, strategy_name, params, work_dir=work_dir, out=out,
                                 auto_fit=auto_fit, progress=progress), out)


def _errors_in_words(predictor, ctx: RunContext) -> dict:
    """What the results page says in words needs beyond the confusion matrix (evaluation/summary.py):
    a few test errors and the training rows of each label. Only for a run with per-row predictions."""
    paired, splits = ctx.notes.get("_paired"), ctx.splits
    if not paired or not hasattr(splits, "test") or not hasattr(splits.train, "labels"):
        return {}
    names = list(getattr(predictor, "label_names", None) or splits.label_names)
    return {"error_examples": error_examples(splits.test.texts, paired["true"], paired["pred"], names),
            "train_label_counts": dict(Counter(splits.train.labels))}


def job_efficiency(work: dict | None, ctx: RunContext, peak_rss_mb: float | None = None) -> dict | None:
    """tokens/s, samples/s, step times and MFU of the run's own compute (its steps, or its encoder
    passes), and what a million of its tokens cost here: None when it did no timed work (features
    from the cache)."""
    if not work:
        return None
    precision = matmul_precision(ctx.precision)
    peak = peak_gflops(precision, "cpu" if ctx.device == "cpu" else "cuda") if work.get("model_flops") else None
    eff = efficiency(work, work.get("model_flops"), peak, ctx.precision, peak_rss_mb)
    if eff is not None:
        eff["usd_per_million_tokens"] = usd_per_million(eff["tokens_per_s"])
    return eff


def _write(out: Path, predictor, strategy: Strategy, ctx: RunContext, data: PreparedData, plan: Plan,
           metrics: dict, samples: list[dict]) -> None:
    task = data.task
    # "_"-keys are in-memory facts for the caller (a comparison's per-row predictions), not the folder's
    notes = {k: v for k, v in ctx.notes.items() if k != "history" and not k.startswith("_")}
    config = {"strategy": strategy.name, "task": task.name, "model": ctx.model.to_dict() | {"ref": ctx.model.ref},
              "params": ctx.params.model_dump(), "seed": ctx.seed, "device": ctx.device,
              "precision": ctx.precision, "labels": list(getattr(data.splits, "label_names", []) or []),
              "max_length": getattr(ctx.params, "max_length", None) or ctx.model.max_length,
              "plan": plan.to_dict(), "notes": _jsonable(notes), "data": task.data_config(data)}
    if "history" in ctx.notes:
        config["history"] = ctx.notes["history"]
    card = task.card(config, metrics, data.report, samples)
    write_artifact(out, predictor, config=config, metrics={**metrics, "samples": samples} if samples else metrics,
                   data_report=data.report, card=card)


def _jsonable(notes: dict) -> dict:
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in notes.items()}
