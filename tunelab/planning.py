"""Pre-flight: check a run's configuration and predict its peak memory and time before any work;
refuse what would not fit, with the concrete changes that would (and apply the cheapest on
--auto-fit)."""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field

import numpy as np

from .models import token_counter
from .models.batch_shapes import split_batch
from .strategies import ConfigError, RunContext, get_strategy, parse_params
from .training.batching import epoch_batches
from .training.preflight import (Estimate, activation_mb, current_rss_mb, inference_memory, memory_budget_mb,
                                 model_dims, time_steps, training_memory)

HEADROOM = 0.9   # never plan past 90% of the budget: allocator fragmentation and the OS need room


class DoesNotFit(ConfigError):
    def __init__(self, message: str, options: list["FitOption"]):
        super().__init__(message)
        self.options = options


@dataclass
class FitOption:
    description: str
    strategy: str
    params: dict
    peak_mb: float


@dataclass
class Plan:
    strategy: str
    params: dict
    estimate: Estimate
    budget_mb: float
    applied: str | None = None
    options: list[FitOption] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "params": self.params, "estimate": self.estimate.to_dict(),
                "budget_mb": round(self.budget_mb), "auto_fit_applied": self.applied}


def _config(ctx: RunContext):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(ctx.model.path), trust_remote_code=False)


def _lengths(ctx: RunContext, texts: list[str]) -> np.ndarray:
    limit = getattr(ctx.params, "max_length", None) or ctx.model.max_length
    return np.minimum(np.asarray(token_counter(ctx.model)(texts) or [0]), limit)


def finetune_memory(ctx: RunContext, params, trainable: int, total: int, lengths: np.ndarray,
                    baseline_mb: float | None = None) -> dict:
    lengths = np.minimum(lengths, params.max_length or ctx.model.max_length)
    eager = params.attention == "eager" or (params.attention == "auto" and ctx.device == "cpu")
    dims = model_dims(_config(ctx))
    if ctx.device == "cpu":
        rows, seq = largest_run(lengths, params.batch_size, ctx.seed,
                                lambda n, L: activation_mb(dims, n, L, eager, params.gradient_checkpointing))
    else:
        rows, seq = params.batch_size, int(lengths.max())
    return training_memory(dims, total, trainable, rows, seq,
                           eager_attention=eager, checkpointing=params.gradient_checkpointing,
                           baseline_mb=baseline_mb)


def largest_run(lengths: np.ndarray, batch_size: int, seed: int, footprint) -> tuple[int, int]:
    """(rows, length) of the forward with the most activations: the loop runs each batch as runs
    of similar length (models.batch_shapes), so that is not always batch x longest text."""
    lengths = np.asarray(lengths, dtype=np.int64)
    runs = (r for b in epoch_batches(lengths, batch_size, seed, 0) for r in split_batch(b, lengths))
    return max(((len(r), int(lengths[r].max())) for r in runs), key=lambda shape: footprint(*shape),
               default=(1, 1))


def estimate_finetune(ctx: RunContext, strategy) -> Estimate:
    import torch

    from .models.inference import collate
    baseline = current_rss_mb()   # before the probe model below exists
    model = strategy.build(ctx)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    lengths = _lengths(ctx, ctx.splits.train.texts)
    breakdown = finetune_memory(ctx, ctx.params, trainable, total, lengths, baseline)
    # Time: a few real steps on a batch of the median size, as the loop runs it (in runs of
    # similar length on CPU), with the run's precision.
    from .models.device import autocast
    p = ctx.params
    batches = epoch_batches(lengths, p.batch_size, ctx.seed, 0)
    typical = sorted(batches, key=lambda b: int(lengths[b].sum()))[len(batches) // 2]
    runs = split_batch(typical, lengths) if ctx.device == "cpu" else [typical]
    inputs = [collate([[101] + [1000] * max(int(lengths[i]) - 2, 0) + [102] for i in run],
                      np.arange(len(run)), 0) for run in runs]
    # The probe must not itself need the memory a refused run would: past the budget it runs
    # checkpointed (the first way that fits), and not at all when even that would not fit.
    fits = sum(breakdown.values()) <= memory_budget_mb() * HEADROOM
    if not fits:
        checkpointed = finetune_memory(ctx, p.model_copy(update={"gradient_checkpointing": True}), trainable,
                                       total, lengths, baseline)
        if sum(checkpointed.values()) > memory_budget_mb() * HEADROOM:
            del model
            gc.collect()
            return Estimate(sum(breakdown.values()), 0.0, breakdown, "not timed: it does not fit",
                            trainable, total)
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=0.0)
    model.train()

    def step():
        for batch in inputs:
            with autocast(ctx.device, ctx.precision):
                loss = model(**batch).logits.float().sum()
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step_s = time_steps(step)
    del model, optimizer, inputs
    gc.collect()
    per_epoch = math.ceil(len(lengths) / p.batch_size / p.gradient_accumulation)
    epochs = min(max(p.epochs, math.ceil(p.min_steps / per_epoch)), max(20, p.epochs))
    steps = per_epoch * epochs
    eval_s = step_s / 3 * math.ceil((len(ctx.splits.validation) + len(ctx.splits.test)) / p.batch_size)
    # step_s is one batch; an optimizer step with gradient accumulation runs several
    step_s *= p.gradient_accumulation
    return Estimate(sum(breakdown.values()), steps * step_s + eval_s, breakdown,
                    f"{steps} steps x {step_s:.2f}s; trainable {trainable:,} of {total:,} parameters",
                    trainable, total)


def _encode_seconds_per_text(ctx: RunContext, model_key: str) -> float:
    """Measured once per model on this machine (64 real texts), then remembered."""
    import json

    from .models import load_sentence_encoder
    from .models.embeddings import encode

    path = ctx.cache_dir / "throughput.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    key = f"{model_key}:{ctx.precision}"
    if key not in known:
        encoder = load_sentence_encoder(ctx.model.path)
        sample = ctx.splits.train.texts[:64]
        known[key] = time_steps(lambda: encode(encoder, sample, precision=ctx.precision),
                                repeats=1) / max(len(sample), 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known))
    return known[key]


def estimate_transfer(ctx: RunContext, strategy) -> Estimate:
    from .models.embeddings import FeatureCache
    from .models.predictors import model_key

    key = model_key(ctx.model.path)
    per_text = _encode_seconds_per_text(ctx, key)
    cache = FeatureCache(ctx.cache_dir / "features")
    if strategy.name == "linear-probe":
        todo = [ds for ds in (ctx.splits.train, ctx.splits.validation)
                if not cache.contains(cache.key(key, ds.texts))]
        n = sum(len(ds) for ds in todo)
    else:
        n = len(ctx.splits.label_names) + min(getattr(ctx.params, "calibration_texts", 0), len(ctx.splits.train))
    n_test = len(ctx.splits.test)
    seconds = (n + n_test) * per_text
    if strategy.name == "few-shot":
        seconds += ctx.params.max_pairs * 3 * per_text   # each pair: two forwards and a backward
    dims = model_dims(_config(ctx))
    total = ctx.model.parameters
    seq = int(_lengths(ctx, ctx.splits.train.texts[:2000]).max())
    breakdown = inference_memory(dims, total, 64, seq, len(ctx.splits.train) + n_test)
    if strategy.name == "few-shot":
        extra = training_memory(dims, total, total, ctx.params.batch_size * 2, seq, baseline_mb=0)
        breakdown.update(gradients=extra["gradients"], optimizer=extra["optimizer"],
                         activations=extra["activations"])
    return Estimate(sum(breakdown.values()), seconds, breakdown, f"{n + n_test} texts to encode")


def estimate(ctx: RunContext, strategy) -> Estimate:
    if hasattr(strategy, "estimate"):      # strategies with their own arithmetic (causal LMs)
        return strategy.estimate(ctx)
    return estimate_finetune(ctx, strategy) if hasattr(strategy, "build") else estimate_transfer(ctx, strategy)


def fit_options(ctx: RunContext, strategy, budget_mb: float, trainable: int, total: int,
                baseline_mb: float | None = None) -> list[FitOption]:
    """Changes that lower peak memory, cheapest in quality and time first. baseline_mb: what the
    process held before the estimate's probe step (after it, the allocator still holds its memory)."""
    if not hasattr(strategy, "build"):
        return []
    lengths = _lengths(ctx, ctx.splits.train.texts)
    p = ctx.params
    options: list[FitOption] = []

    def add(description: str, name: str, changes: dict, train_params: int):
        params = p.model_copy(update=changes) if name == strategy.name else \
            parse_params(get_strategy(name), {k: v for k, v in {**_shared(p), **changes}.items()})
        mem = finetune_memory(ctx, params, train_params, total, lengths, baseline_mb)
        if options and sum(mem.values()) >= 0.95 * min(o.peak_mb for o in options):
            return       # no lower than a cheaper option already listed (e.g. a smaller batch whose
                         # runs are no smaller: the loop already splits big batches on CPU)
        options.append(FitOption(description, name, {**_shared(p), **changes} if name != strategy.name
                                  else changes, sum(mem.values())))

    if not p.gradient_checkpointing:
        add("gradient checkpointing (same result, ~30% slower)", strategy.name,
            {"gradient_checkpointing": True}, trainable)
    batch, accum = p.batch_size, p.gradient_accumulation
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        add(f"batch {batch} with gradient accumulation {accum} (same effective batch)", strategy.name,
            {"batch_size": batch, "gradient_accumulation": accum, "gradient_checkpointing": True}, trainable)
    p95 = int(np.percentile(lengths, 95))
    if p95 < int(lengths.max()):
        add(f"max_length {p95} (truncates the longest 5% of texts)", strategy.name,
            {"max_length": max(p95, 8), "gradient_checkpointing": True}, trainable)
    if strategy.name == "full":
        add("LoRA instead of full fine-tuning (base frozen, ~1% of parameters trained)", "lora",
            {"gradient_checkpointing": True}, max(total // 100, 1))
    fitting = [o for o in options if o.peak_mb <= budget_mb * HEADROOM]
    return fitting or options[-1:]


def _shared(params) -> dict:
    keep = ("epochs", "batch_size", "gradient_accumulation", "max_length", "early_stopping_patience",
            "checkpoint_every", "gradient_checkpointing")
    return {k: getattr(params, k) for k in keep if hasattr(params, k)}


def preflight(ctx: RunContext, strategy, auto_fit: bool = False) -> tuple[Plan, RunContext, object]:
    """Check, estimate, and refuse or (with auto_fit) adjust. Returns the plan and the context
    and strategy to run, which differ from the inputs only when auto-fit changed them."""
    strategy.check(ctx)
    est = estimate(ctx, strategy)
    budget = memory_budget_mb()
    plan = Plan(strategy.name, ctx.params.model_dump(), est, budget)
    if est.peak_mb <= budget * HEADROOM:
        return plan, ctx, strategy
    options = fit_options(ctx, strategy, budget, est.trainable_params, est.total_params,
                          est.breakdown_mb.get("process"))
    plan.options = options
    message = (f"{strategy.name} would need ~{est.peak_mb:,.0f} MB at its peak but {budget:,.0f} MB is "
               f"available ({HEADROOM:.0%} usable). Ways that fit:\n" +
               "\n".join(f"  - {o.description}: ~{o.peak_mb:,.0f} MB  "
                         f"(--strategy {o.strategy} " + " ".join(f"--set {k}={v}" for k, v in o.params.items()) + ")"
                         for o in options) + "\nor rerun with --auto-fit to apply the first.")
    if not auto_fit or not options or options[0].peak_mb > budget * HEADROOM:
        raise DoesNotFit(message, options)
    choice = options[0]
    new_strategy = get_strategy(choice.strategy)
    params = ctx.params.model_copy(update=choice.params) if choice.strategy == strategy.name \
        else parse_params(new_strategy, choice.params)
    new_ctx = RunContext(**{**ctx.__dict__, "params": params})
    new_plan = Plan(choice.strategy, params.model_dump(), Estimate(choice.peak_mb, est.seconds, {}, choice.description),
                    budget, applied=choice.description, options=options)
    return new_plan, new_ctx, new_strategy


def current_memory_mb() -> float:
    return current_rss_mb()
