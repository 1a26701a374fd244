"""Pre-flight arithmetic: a run's peak memory and time, predicted before any work.

Memory (bytes) = what the process already holds + weights + gradients + optimizer state +
activations of the largest batch. Activations per token and layer, for a transformer encoder
trained with autocast: the saved inputs of the projections and the feed-forward (~16 hidden +
2 intermediate values) and, with eager attention, scores/probabilities/dropout mask
(~3 x heads x sequence values), each 4 bytes. Gradient checkpointing keeps only each layer's
input plus one layer's activations. Time comes from a few timed steps of the real model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch

MB = 2**20


@dataclass
class Estimate:
    peak_mb: float
    seconds: float
    breakdown_mb: dict = field(default_factory=dict)
    detail: str = ""
    trainable_params: int = 0
    total_params: int = 0

    def to_dict(self) -> dict:
        return {"peak_mb": round(self.peak_mb), "seconds": round(self.seconds, 1),
                "breakdown_mb": {k: round(v) for k, v in self.breakdown_mb.items()}, "detail": self.detail}


def current_rss_mb() -> float:
    return psutil.Process().memory_info().rss / MB


def memory_budget_mb() -> float:
    """What a run may use: TUNELAB_MEMORY_LIMIT_MB if set (a job's quota), else what the OS has
    free plus what this process already holds."""
    limit = os.environ.get("TUNELAB_MEMORY_LIMIT_MB")
    if limit:
        return float(limit)
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free / MB
    return psutil.virtual_memory().available / MB + current_rss_mb()


def model_dims(config) -> dict:
    return {"hidden": getattr(config, "hidden_size", 768),
            "layers": getattr(config, "num_hidden_layers", 12),
            "heads": getattr(config, "num_attention_heads", 12),
            "intermediate": getattr(config, "intermediate_size", 4 * getattr(config, "hidden_size", 768))}


def activation_mb(dims: dict, batch: int, seq: int, eager_attention: bool, checkpointing: bool) -> float:
    h, layers, a, inter = dims["hidden"], dims["layers"], dims["heads"], dims["intermediate"]
    per_token_layer = 4 * (16 * h + 2 * inter + (3 * a * seq if eager_attention else 2 * a))
    tokens = batch * seq
    if checkpointing:
        return tokens * (layers * 4 * h + per_token_layer) / MB
    return tokens * layers * per_token_layer / MB


def training_memory(dims: dict, total_params: int, trainable_params: int, batch: int, seq: int,
                    eager_attention: bool = True, checkpointing: bool = False,
                    weight_bytes: float = 4.0, baseline_mb: float | None = None) -> dict:
    baseline = current_rss_mb() if baseline_mb is None else baseline_mb
    return {
        "process": baseline,
        "weights": total_params * weight_bytes / MB,
        # autocast keeps a bf16 copy of each weight it casts during a step
        "autocast_copies": total_params * 2 / MB,
        "gradients": trainable_params * 4 / MB,
        "optimizer": trainable_params * 8 / MB,      # AdamW: two fp32 moments
        "activations": activation_mb(dims, batch, seq, eager_attention, checkpointing),
    }


def inference_memory(dims: dict, total_params: int, batch: int, seq: int, n_texts: int,
                     baseline_mb: float | None = None) -> dict:
    baseline = current_rss_mb() if baseline_mb is None else baseline_mb
    return {
        "process": baseline,
        "weights": total_params * 4 / MB,
        "autocast_copies": total_params * 2 / MB,
        "activations": batch * seq * 4 * (4 * dims["hidden"] + dims["intermediate"] + dims["heads"] * seq) / MB,
        "features": n_texts * dims["hidden"] * 4 / MB,
    }


def time_steps(step, warmup: int = 1, repeats: int = 3, budget_s: float = 6.0) -> float:
    """Median seconds of `step()` after warm-up. Steps that are slow (long texts: a 32 x 256-token
    step takes ~15 s on 2 cores) are timed once: their own length makes one timing stable, and
    pre-flight must stay small next to the run it checks."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    if warmup and (time.perf_counter() - t0) / warmup * repeats > budget_s:
        repeats = 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --- Several ranks: what each holds -------------------------------------------------------------
# The global batch is split across ranks (training/distributed.py), so each rank's activations are
# those of its own slice: the estimates compute them at local_batch(). The parameter state is
# what differs between the two ways of spreading a run:
# - DDP: every rank holds the whole model, its gradients and optimizer state, plus DDP's gradient
#   buckets (a flat copy of the gradients the all-reduce works on: gradient_as_bucket_view is off).
# - FSDP (fully_shard per block, then the root): each rank holds 1/N of weights, gradients and
#   optimizer state, plus what is gathered at once: the root's own weights (embeddings, head, the
#   final norm), the block being computed and the one prefetched, and one of them's full gradient
#   before its reduce-scatter. Autocast's bf16 copies are counted whole: its cache keeps each
#   weight it cast, gathered ones included, until the step's forward ends. The loop shards a copy
#   and keeps the caller's model whole in host memory (training/replicas.py): on CPU that copy
#   weighs on the same budget.
SHARDED_PARTS = ("weights", "gradients", "optimizer")


@dataclass(frozen=True)
class Ranks:
    """How many ranks run one job, and how many of them draw on one memory budget: one per GPU
    (each rank has its own device), all of a node's on CPU (they share its RAM)."""
    world: int = 1
    sharing: int = 1

    @classmethod
    def from_env(cls, device: str) -> "Ranks":
        """torchrun's contract: WORLD_SIZE ranks in all, LOCAL_WORLD_SIZE of them on this node."""
        world = max(int(os.environ.get("WORLD_SIZE") or 1), 1)
        local = max(int(os.environ.get("LOCAL_WORLD_SIZE") or world), 1)
        return cls(world, 1 if str(device).startswith("cuda") else min(local, world))


def local_batch(batch: int, world: int) -> int:
    """The rows of the largest slice a rank takes of a global batch."""
    return -(-batch // max(world, 1))


def fsdp_gathered_mb(dims: dict, vocab: int, tied: bool, total_params: int, trainable_params: int,
                     weight_bytes: float = 4.0) -> float:
    """What a rank holds unsharded at once under FSDP (see above), from the model's shape."""
    root = vocab * dims["hidden"] * (1 if tied else 2)
    block = max(total_params - root, 0) / max(dims["layers"], 1)
    gathered = (root + 2 * block) * weight_bytes
    unit_grad = max(root, block) * 4 if trainable_params else 0.0
    return (gathered + unit_grad) / MB


def per_rank_memory(breakdown: dict, world: int, sharded: bool, gathered_mb: float = 0.0,
                    host_copy: bool = False) -> dict:
    """One rank's share of a breakdown (training_memory / lm_memory, activations already at the
    rank's local batch) when `world` ranks run the job, DDP or FSDP. host_copy: the whole model
    kept beside the shards counts (the budget is host memory)."""
    if world <= 1:
        return dict(breakdown)
    out = dict(breakdown)
    if sharded:
        for part in SHARDED_PARTS:
            if part in out:
                out[part] = out[part] / world
        out["fsdp_gathered"] = gathered_mb
        if host_copy:
            out["whole_model"] = breakdown.get("weights", 0.0)
    else:
        out["ddp_buckets"] = breakdown.get("gradients", 0.0)
    return out
