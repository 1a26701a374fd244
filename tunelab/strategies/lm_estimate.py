"""Pre-flight for causal-LM strategies: peak memory from the model's dimensions (with the logits,
which dominate small LMs with large vocabularies) and time from two timed steps of the real model."""

from __future__ import annotations

import gc
import math

import numpy as np

from ..training.preflight import Estimate, Ranks, current_rss_mb, local_batch, model_dims, time_steps, training_memory

MB = 2**20


def lm_memory(config, total: int, trainable: int, batch: int, seq: int, checkpointing: bool,
              baseline_mb: float, copies: int = 1) -> dict:
    """`copies`: forward passes kept for one step (DPO: chosen and rejected, policy and reference)."""
    mem = training_memory(model_dims(config), total, trainable, batch * copies, seq, eager_attention=False,
                          checkpointing=checkpointing, baseline_mb=baseline_mb)
    vocab = getattr(config, "vocab_size", 32000)
    # logits (autocast bf16 + fp32 copy for the loss) and their gradient
    mem["logits"] = batch * copies * seq * vocab * (2 + 4 + 4) / MB
    return mem


def estimate_lm(ctx, build_model, lengths: list[int], steps_per_epoch_rows: int, copies: int = 1,
                global_batch: bool = False) -> Estimate:
    """build_model(ctx) -> the model as it will train; lengths: token counts of training rows.
    global_batch: params.batch_size is split across ranks (the shared loop), not each rank's own
    (a Trainer's per-device batch)."""
    import torch

    from ..models.device import autocast

    p = ctx.params
    baseline = current_rss_mb()
    model = build_model(ctx)
    trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    total = sum(q.numel() for q in model.parameters())
    cap = min(p.max_length, ctx.model.max_length)
    lengths = np.minimum(np.asarray(lengths or [cap]), cap)
    seq = cap if getattr(p, "packing", False) else int(lengths.max())
    batch = local_batch(p.batch_size, Ranks.from_env(ctx.device).world) if global_batch else p.batch_size
    breakdown = lm_memory(model.config, total, trainable, batch, seq, p.gradient_checkpointing, baseline, copies)
    typical = max(int(np.mean(lengths)), 2) if not getattr(p, "packing", False) else cap
    ids = torch.full((min(batch, len(lengths)) * copies, typical), 5, dtype=torch.long)
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0)
    model.train()

    def step():
        with autocast(ctx.device, ctx.precision):
            logits = model(input_ids=ids.to(ctx.device), use_cache=False).logits
        logits.float().logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step_s = time_steps(step, warmup=1, repeats=1)
    del model, optimizer
    gc.collect()
    per_epoch = math.ceil(steps_per_epoch_rows / p.batch_size / p.gradient_accumulation)
    epochs = min(max(p.epochs, math.ceil(getattr(p, "min_steps", 0) / max(per_epoch, 1))),
                 max(getattr(p, "max_epochs", p.epochs), p.epochs))
    steps = per_epoch * epochs
    return Estimate(sum(breakdown.values()), steps * step_s * p.gradient_accumulation, breakdown,
                    f"{steps} steps x {step_s:.2f}s; trainable {trainable:,} of {total:,} parameters",
                    trainable, total)
