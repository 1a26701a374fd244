"""Pre-flight: check a run's configuration and predict its peak memory and time before any work;
refuse what would not fit, with the concrete changes that would (and apply the cheapest on
--auto-fit)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..strategies import ConfigError, RunContext, get_strategy, parse_params
from ..strategies.estimates import HEADROOM, _lengths, finetune_memory
from ..training.preflight import Estimate, current_rss_mb, memory_budget_mb


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


def fit_options(ctx: RunContext, strategy, budget_mb: float, trainable: int, total: int,
                baseline_mb: float | None = None) -> list[FitOption]:
    """Changes that lower peak memory, cheapest in quality and time first. baseline_mb: what the
    process held before the estimate's probe step (after it, the allocator still holds its memory)."""
    own = getattr(strategy, "memory_options", None)
    if own is not None:          # a strategy that knows its own knobs (images: batch, size, lighter)
        return [FitOption(o["description"], o["strategy"], o["params"], o["peak_mb"])
                for o in own(ctx, budget_mb * HEADROOM)]
    if not strategy.adjustable_memory:
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
    if strategy.lighter:
        lighter, why = strategy.lighter
        add(why, lighter, {"gradient_checkpointing": True}, max(total // 100, 1))
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
    est = strategy.estimate(ctx)
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
