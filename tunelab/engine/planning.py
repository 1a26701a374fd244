"""Pre-flight: check a run's configuration and predict its peak memory and time before any work;
refuse what would not fit, with the concrete changes that would (and apply the cheapest on
--auto-fit)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..strategies import ConfigError, RunContext, get_strategy, parse_params
from ..strategies.estimates import HEADROOM, _config, _lengths, finetune_memory
from ..training.distributed import init_process_group
from ..training.preflight import (Estimate, Ranks, current_rss_mb, fsdp_gathered_mb, memory_budget_mb, model_dims,
                                  per_rank_memory)


class DoesNotFit(ConfigError):
    def __init__(self, message: str, options: list["FitOption"]):
        super().__init__(message)
        self.options = options


@dataclass
class FitOption:
    description: str
    strategy: str
    params: dict
    peak_mb: float                 # per rank when the option runs on several
    processes: int | None = None   # ranks it needs; None: as many as this run has

    def command(self) -> str:
        sets = " ".join(f"--set {k}={v}" for k, v in self.params.items())
        return f"--strategy {self.strategy} {sets}" + (f" --processes {self.processes}" if self.processes else "")


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
                baseline_mb: float | None = None, ranks: Ranks = Ranks()) -> list[FitOption]:
    """Changes that lower peak memory, cheapest in quality and time first. baseline_mb: what the
    process held before the estimate's probe step (after it, the allocator still holds its memory).
    budget_mb: one rank's; peaks are one rank's of `ranks` (data parallel)."""
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
        mem = per_rank_memory(finetune_memory(ctx, params, train_params, total, lengths, baseline_mb), ranks.world,
                              sharded=False)
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
    and strategy to run, which differ from the inputs only when auto-fit changed them. A run on
    several ranks (torchrun's WORLD_SIZE) is planned per rank: each rank's peak against its share
    of the budget (its GPU's, or its node's RAM over the node's ranks)."""
    strategy.check(ctx)
    ranks = Ranks.from_env(ctx.device)
    if ranks.world > 1 and "MASTER_ADDR" in os.environ:      # torchrun's ranks: join now, to agree below
        init_process_group(str(ctx.device))
    budget, est = _agreed(memory_budget_mb() / ranks.sharing, strategy.estimate(ctx))
    est = per_rank_estimate(ctx, est, ranks.world, getattr(ctx.params, "sharding", "none") == "fsdp")
    plan = Plan(strategy.name, ctx.params.model_dump(), est, budget)
    if est.peak_mb <= budget * HEADROOM:
        return plan, ctx, strategy
    sharding = sharding_options(ctx, strategy, est, budget, ranks)
    options = fit_options(ctx, strategy, budget, est.trainable_params, est.total_params,
                          est.breakdown_mb.get("process"), ranks)
    # a run already on several ranks shards before anything costs quality or time; a run on one
    # would have to be started again on several
    options = sharding + options if ranks.world > 1 else options + sharding
    plan.options = options
    per_rank = f" per rank ({ranks.world} ranks)" if ranks.world > 1 else ""
    message = (f"{strategy.name} would need ~{est.peak_mb:,.0f} MB{per_rank} at its peak but {budget:,.0f} MB is "
               f"available ({HEADROOM:.0%} usable). Ways that fit:\n" +
               "\n".join(f"  - {o.description}: ~{o.peak_mb:,.0f} MB  ({o.command()})" for o in options) +
               "\nor rerun with --auto-fit to apply the first.")
    # auto-fit applies what this process can: an option on another number of ranks needs a new launch
    here = [o for o in options if o.processes in (None, ranks.world)]
    if not auto_fit or not here or here[0].peak_mb > budget * HEADROOM:
        raise DoesNotFit(message, options)
    choice = here[0]
    new_strategy = get_strategy(choice.strategy)
    params = ctx.params.model_copy(update=choice.params) if choice.strategy == strategy.name \
        else parse_params(new_strategy, choice.params)
    new_ctx = RunContext(**{**ctx.__dict__, "params": params})
    new_plan = Plan(choice.strategy, params.model_dump(), Estimate(choice.peak_mb, est.seconds, {}, choice.description),
                    budget, applied=choice.description, options=options)
    return new_plan, new_ctx, new_strategy


def per_rank_estimate(ctx: RunContext, est: Estimate, world: int, sharded: bool) -> Estimate:
    """The estimate as one of `world` ranks sees it (DDP, or FSDP when sharded)."""
    if world <= 1 or not est.breakdown_mb:
        return est
    breakdown = per_rank_memory(est.breakdown_mb, world, sharded, _gathered_mb(ctx, est) if sharded else 0.0,
                                host_copy=not _on_gpu(ctx))
    how = "sharded (FSDP)" if sharded else "data parallel"
    return Estimate(sum(breakdown.values()), est.seconds, breakdown, f"{est.detail}; per rank of {world}, {how}",
                    est.trainable_params, est.total_params)


def _gathered_mb(ctx: RunContext, est: Estimate) -> float:
    config = _config(ctx)
    return fsdp_gathered_mb(model_dims(config), getattr(config, "vocab_size", 32000),
                            bool(getattr(config, "tie_word_embeddings", False)), est.total_params,
                            est.trainable_params)


def shard_candidates(ranks: Ranks, gpus: int) -> list[int]:
    """Rank counts sharding could run on: this run's own when it already has several, else up to
    the GPUs this process sees (on one node's CPU, ranks share its RAM: sharding there saves nothing)."""
    return [ranks.world] if ranks.world > 1 else list(range(2, gpus + 1))


def _on_gpu(ctx: RunContext) -> bool:
    return str(ctx.device).startswith("cuda")


def _gpus(ctx: RunContext) -> int:
    import torch

    return torch.cuda.device_count() if _on_gpu(ctx) else 0


def sharding_options(ctx: RunContext, strategy, est: Estimate, budget_mb: float,
                     ranks: Ranks) -> list[FitOption]:
    """"N processes, sharded" for a strategy that can shard (its params have `sharding`) and does
    not yet: the fewest ranks whose per-rank peak fits, else the most there are (the closest)."""
    if "sharding" not in type(ctx.params).model_fields or ctx.params.sharding == "fsdp" or not est.breakdown_mb:
        return []
    single = est.breakdown_mb
    if ranks.world > 1:      # undo the data-parallel extras: per_rank_memory starts from one process
        single = {k: v for k, v in single.items() if k != "ddp_buckets"}
    tried = []
    for n in shard_candidates(ranks, _gpus(ctx)):
        peak = sum(per_rank_memory(single, n, sharded=True, gathered_mb=_gathered_mb(ctx, est),
                                   host_copy=not _on_gpu(ctx)).values())
        tried.append(FitOption(f"{n} processes, sharded: ~{peak / 1024:.1f} GB per rank", strategy.name,
                               {"sharding": "fsdp"}, peak, n))
        if peak <= budget_mb * HEADROOM:
            return tried[-1:]
    return tried[-1:]


def _agreed(budget_mb: float, est: Estimate) -> tuple[float, Estimate]:
    """Every rank must take the same decision (one that shards while another does not would hang
    their first collective): the smallest budget and the largest process baseline of all ranks,
    where the ranks can already talk. Off torch.distributed, this process's own."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return budget_mb, est
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    values = torch.tensor([-budget_mb, est.breakdown_mb.get("process", 0.0)], dtype=torch.float64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    budget_mb, process = -float(values[0]), float(values[1])
    if "process" in est.breakdown_mb:
        breakdown = {**est.breakdown_mb, "process": process}
        est = Estimate(sum(breakdown.values()), est.seconds, breakdown, est.detail, est.trainable_params,
                       est.total_params)
    return budget_mb, est


def current_memory_mb() -> float:
    return current_rss_mb()
