"""Pre-flight arithmetic every strategy's `estimate` uses: peak memory from the model's shape and
the data's lengths, time from a few real steps (fine-tuning) or a measured encode rate (frozen
encoders)."""

from __future__ import annotations

import gc
import math
import time

import numpy as np

from ..models import token_counter
from ..models.batch_shapes import split_batch
from ..training.batching import epoch_batches
from ..training.preflight import (Estimate, Ranks, activation_mb, current_rss_mb, inference_memory, local_batch,
                                  memory_budget_mb, model_dims, time_steps, training_memory)
from .base import RunContext

HEADROOM = 0.9   # never plan past 90% of the budget: allocator fragmentation and the OS need room


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
    # a rank's activations are those of its slice of the global batch
    batch = local_batch(params.batch_size, Ranks.from_env(ctx.device).world)
    if ctx.device == "cpu":
        rows, seq = largest_run(lengths, batch, ctx.seed,
                                lambda n, L: activation_mb(dims, n, L, eager, params.gradient_checkpointing))
    else:
        rows, seq = batch, int(lengths.max())
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

    from ..models.inference import collate
    baseline = current_rss_mb()   # before the probe model below exists
    model = strategy.build(ctx)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    lengths = _lengths(ctx, ctx.splits.train.texts)
    breakdown = finetune_memory(ctx, ctx.params, trainable, total, lengths, baseline)
    # Time: a few real steps on a batch of the median size, as the loop runs it (in runs of
    # similar length on CPU), with the run's precision.
    from ..models.device import autocast
    p = ctx.params
    batches = epoch_batches(lengths, p.batch_size, ctx.seed, 0)
    typical = sorted(batches, key=lambda b: int(lengths[b].sum()))[len(batches) // 2]
    typical = typical[:local_batch(len(typical), Ranks.from_env(ctx.device).world)]   # a rank's slice
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
    epochs = max(p.epochs, math.ceil(p.min_steps / per_epoch))
    steps = per_epoch * epochs
    eval_s = step_s / 3 * math.ceil((len(ctx.splits.validation) + len(ctx.splits.test)) / p.batch_size)
    # step_s is one batch; an optimizer step with gradient accumulation runs several
    step_s *= p.gradient_accumulation
    return Estimate(sum(breakdown.values()), steps * step_s + eval_s, breakdown,
                    f"{steps} steps x {step_s:.2f}s; trainable {trainable:,} of {total:,} parameters",
                    trainable, total)


THROUGHPUT_MAX_AGE_S = 24 * 3600


def _encode_seconds_per_text(ctx: RunContext, model_key: str) -> float:
    """Measured once per model on this machine (64 real texts), then remembered for a day: one
    measurement taken while the machine was busy must not skew every later estimate for good."""
    import json

    from ..models import load_sentence_encoder
    from ..models.embeddings import encode

    path = ctx.cache_dir / "throughput.json"
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        known = {}
    key = f"{model_key}:{ctx.precision}"
    entry = known.get(key)
    fresh = isinstance(entry, dict) and time.time() - entry.get("at", 0) < THROUGHPUT_MAX_AGE_S
    if not fresh:
        encoder = load_sentence_encoder(ctx.model.path)
        sample = ctx.splits.train.texts[:64]
        seconds = time_steps(lambda: encode(encoder, sample, precision=ctx.precision),
                             repeats=1) / max(len(sample), 1)
        known[key] = entry = {"seconds_per_text": seconds, "at": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known))
    return float(entry["seconds_per_text"])


def estimate_transfer(ctx: RunContext, texts: int, *, pair_texts: int = 0, trains_encoder: bool = False) -> Estimate:
    """A frozen-encoder strategy: `texts` to encode before the test split, `pair_texts` forward and
    backward passes of contrastive tuning (SetFit), the encoder's gradients when it is tuned."""
    from ..models.predictors import model_key

    per_text = _encode_seconds_per_text(ctx, model_key(ctx.model.path))
    n_test = len(ctx.splits.test)
    seconds = (texts + n_test) * per_text + pair_texts * 3 * per_text   # a pair: two forwards, a backward
    dims = model_dims(_config(ctx))
    total = ctx.model.parameters
    seq = int(_lengths(ctx, ctx.splits.train.texts[:2000]).max())
    breakdown = inference_memory(dims, total, 64, seq, len(ctx.splits.train) + n_test)
    if trains_encoder:
        extra = training_memory(dims, total, total, ctx.params.batch_size * 2, seq, baseline_mb=0)
        breakdown.update(gradients=extra["gradients"], optimizer=extra["optimizer"],
                         activations=extra["activations"])
    return Estimate(sum(breakdown.values()), seconds, breakdown, f"{texts + n_test} texts to encode")


def uncached_rows(ctx: RunContext, splits) -> int:
    """Rows of these splits whose features the shared cache does not hold yet."""
    from ..models.embeddings import FeatureCache
    from ..models.predictors import model_key

    key, cache = model_key(ctx.model.path), FeatureCache(ctx.cache_dir / "features")
    return sum(len(ds) for ds in splits if not cache.contains(cache.key(key, ds.texts)))
