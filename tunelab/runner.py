"""The library's entry point: from files and a model to trained, evaluated, compared classifiers.

The CLI calls this, and so will the job workers of the service: one code path for both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import write_artifact
from .data import DataError, Splits, TextDataset, read_table, split_dataset, stratified_limit, validate
from .evaluation import classification_metrics, timed_predict
from .models import ModelSpec, resolve_model, token_counter
from .models.device import best_precision, default_device
from .planning import Plan, preflight
from .strategies import RunContext, get_strategy, parse_params
from .training.costs import ResourceMeter
from .training.progress import ProgressFn, null_progress


def tunelab_home() -> Path:
    return Path(os.environ.get("TUNELAB_HOME", Path.home() / ".tunelab"))


@dataclass
class DataSpec:
    train_file: Path
    test_file: Path | None = None
    text_column: str | None = None
    label_column: str | None = None
    limit: int | None = None          # a stratified subset of the training file (quick runs)
    seed: int = 0


@dataclass
class PreparedData:
    splits: Splits
    report: dict
    spec: DataSpec


@dataclass
class RunResult:
    strategy: str
    metrics: dict
    plan: Plan
    out: Path | None = None
    notes: dict = field(default_factory=dict)


def _dedupe(ds: TextDataset) -> TextDataset:
    """One copy of each (text, label): repeats would otherwise land in train and test alike."""
    seen, keep = set(), []
    for i, e in enumerate(ds.examples):
        key = (" ".join(e.text.split()), e.label)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return ds.subset(keep) if len(keep) < len(ds) else ds


def prepare_data(spec: DataSpec, model: ModelSpec) -> PreparedData:
    """Read, validate (errors raise DataError with the report), and split."""
    train = read_table(spec.train_file, text_column=spec.text_column, label_column=spec.label_column)
    test = None
    if spec.test_file:
        test = read_table(spec.test_file, text_column=spec.text_column or train.text_column,
                          label_column=spec.label_column or train.label_column)
    counter = token_counter(model)
    report = validate(train, test, max_length=model.max_length, count_tokens=counter)
    if not report.ok:
        raise DataError(report.errors)
    if test is not None:
        test = test.subset([i for i, e in enumerate(test.examples) if e.label in set(train.label_names)])
    source = _dedupe(train) if test is None else train
    if spec.limit and spec.limit < len(source):
        source = stratified_limit(source, spec.limit, seed=spec.seed)
    splits = split_dataset(source, seed=spec.seed, test=test)
    return PreparedData(splits, report.to_dict(), spec)


def make_context(model: ModelSpec, data: PreparedData, strategy_name: str, params, *, work_dir: Path,
                 progress: ProgressFn = null_progress, seed: int = 0) -> tuple[object, RunContext]:
    strategy = get_strategy(strategy_name)
    device = default_device()
    ctx = RunContext(model=model, splits=data.splits, params=parse_params(strategy, params),
                     work_dir=Path(work_dir), cache_dir=tunelab_home() / "cache", device=device,
                     precision=best_precision(device), seed=seed, progress=progress)
    return strategy, ctx


def evaluate(predictor, test: TextDataset) -> dict:
    proba, _ = timed_predict(predictor, test.texts)
    # Latency as a served request sees it: no feature cache, a sample of the test texts.
    cache = getattr(predictor, "cache", None)
    if cache is not None:
        predictor.cache = None
    _, speed = timed_predict(predictor, test.texts[:256])
    if cache is not None:
        predictor.cache = cache
    names = predictor.label_names
    predicted = [names[i] for i in proba.argmax(axis=1)] if len(test) else []
    return {**classification_metrics(test.labels, predicted, names), **speed, "test_rows": len(test)}


def run_strategy(model: ModelSpec, data: PreparedData, strategy_name: str, params=None, *,
                 out: Path | None = None, work_dir: Path | None = None, auto_fit: bool = False,
                 progress: ProgressFn = null_progress) -> RunResult:
    # Checkpoints live with the output, so rerunning the same command resumes; a run with no
    # output folder gets a private scratch folder and can't pick up another run's checkpoints.
    work = Path(work_dir or out or tempfile.mkdtemp(prefix=f"tunelab-{strategy_name}-"))
    strategy, ctx = make_context(model, data, strategy_name, params, work_dir=work, progress=progress,
                                 seed=data.spec.seed)
    plan, ctx, strategy = preflight(ctx, strategy, auto_fit=auto_fit)
    with ResourceMeter() as meter:
        predictor = strategy.fit(ctx)
    cost = meter.record
    metrics = evaluate(predictor, data.splits.test)
    trainable = ctx.notes.get("trainable_params", 0 if strategy.family == "transfer" else cost.trainable_params)
    if strategy.name in ("linear-probe", "few-shot"):
        trainable = int(predictor.weight.size + predictor.bias.size) + (
            sum(p.numel() for p in predictor.encoder.parameters()) if strategy.name == "few-shot" else 0)
    metrics.update(strategy=strategy.name, train_seconds=cost.wall_seconds, cpu_seconds=cost.cpu_seconds,
                   gpu_seconds=cost.gpu_seconds, peak_rss_mb=cost.peak_rss_mb, peak_gpu_mb=cost.peak_gpu_mb,
                   trainable_params=int(trainable), total_params=int(ctx.notes.get("total_params", model.parameters)),
                   tokens_processed=int(ctx.notes.get("tokens_processed", 0)),
                   predicted_peak_mb=plan.estimate.peak_mb, predicted_seconds=plan.estimate.seconds)
    if out is not None:
        config = {"strategy": strategy.name, "model": model.to_dict() | {"ref": model.ref},
                  "params": ctx.params.model_dump(), "seed": ctx.seed, "device": ctx.device,
                  "precision": ctx.precision, "labels": data.splits.label_names,
                  "max_length": getattr(ctx.params, "max_length", None) or model.max_length,
                  "plan": plan.to_dict(), "notes": _jsonable(ctx.notes),
                  "data": {"train_file": Path(data.spec.train_file).name, "train_sha256": data.splits.train.sha256,
                           "test_file": Path(data.spec.test_file).name if data.spec.test_file else None,
                           "train_rows": len(data.splits.train), "validation_rows": len(data.splits.validation),
                           "test_rows": len(data.splits.test), "test_origin": data.splits.test_origin,
                           "text_column": data.splits.train.text_column,
                           "label_column": data.splits.train.label_column}}
        write_artifact(Path(out), predictor, config=config, metrics=metrics, data_report=data.report)
        # The model is safe in the artifact: the checkpoints (weights + optimizer state) are not needed.
        shutil.rmtree(Path(work) / "checkpoints", ignore_errors=True)
    return RunResult(strategy.name, metrics, plan, out, ctx.notes)


def _jsonable(notes: dict) -> dict:
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in notes.items()}
