"""Pre-flight for image strategies: peak memory from the model's parameters and the activations one
image leaves for the backward pass at the run's size (pixels x batch), time from a measured rate on
the run's own images (frozen features) or a few real training steps (fine-tuning), and, for a run
that would not fit, the changes that would (engine/planning.py asks `memory_options`).

Activations: every leaf module's output for one image at the run's size, counted with forward
hooks (no gradients, one image: cheap whatever the configuration), times ACTIVATION_FACTOR for
what autograd keeps besides them (a ReLU6's/SiLU's input, BatchNorm's saved statistics), times
the batch. Only the modules that are trained, and those after them, keep activations.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import time

import numpy as np

from ..training.preflight import MB, Estimate, current_rss_mb, memory_budget_mb, time_steps
from .base import RunContext
from .estimates import HEADROOM

ACTIVATION_FACTOR = 2.0
"""Saved tensors of a conv/BN/activation stack over its leaf outputs (an upper bound: measured
peaks of ResNet-20 and EfficientNet-Lite0 training steps stayed under it)."""
TIMED_BATCH = 8
"""Timing steps run at most this many images (scaled to the batch): pre-flight must neither take
the time nor need the memory of the run it checks."""
THROUGHPUT_MAX_AGE_S = 24 * 3600


def preprocess_for(backbone, size: int | None):
    """The backbone's preprocessing, at `size` pixels when a run asks for another size."""
    pre = backbone.preprocess
    if size and size != pre.size:
        pre = dataclasses.replace(pre, size=int(size))
    return pre


def cache_key(ctx: RunContext) -> str:
    """Identifies the model's weights for the feature cache (encode_images adds the preprocessing)."""
    from ..models.vision import image_model_key

    return image_model_key(ctx.model.path)


def feature_key(cache, key: str, backbone, ds) -> str:
    """The cache entry encode_images reads and writes for a dataset (models/vision.py's key)."""
    return cache.key(f"image:{key}:{json.dumps(backbone.preprocess.to_dict())}", [e.sha256 for e in ds.examples])


REFERENCE_SIDE = 128
"""Activations are counted at most at this size and scaled by the pixels: a convolutional network's
activations grow with the pixels, and a count at 1024 px would itself be a heavy forward pass."""
_COUNTS: dict = {}


def activation_elements(backbone, pre, trained=None) -> int:
    """Values one image leaves for the backward pass at `pre`'s size: the outputs of the leaf
    modules in `trained` (default: all) and of every module after the first of them."""
    names = {id(m): n for n, m in backbone.named_modules()}
    key = (type(backbone).__name__, sum(p.numel() for p in backbone.parameters()), pre.size,
           None if trained is None else tuple(names.get(id(t), "?") for t in trained))
    if key not in _COUNTS:
        side = min(pre.size, REFERENCE_SIDE)
        try:
            count = _count(backbone, side, trained) * (pre.size / side) ** 2
        except RuntimeError:          # a model that takes one size only (a ViT's position embeddings)
            count = _count(backbone, pre.size, trained)
        if len(_COUNTS) > 64:
            _COUNTS.clear()
        _COUNTS[key] = int(count * ACTIVATION_FACTOR)
    return _COUNTS[key]


def _count(backbone, side: int, trained) -> int:
    import torch

    trained_ids = None if trained is None else {id(m) for t in trained for m in t.modules()}
    total, started = [0], [trained_ids is None]

    def hook(module, _inputs, output):
        if not started[0] and id(module) in trained_ids:
            started[0] = True
        if started[0] and isinstance(output, torch.Tensor):
            total[0] += output.numel()

    leaves = [m for m in backbone.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, 3, side, side))
    finally:
        for h in handles:
            h.remove()
        backbone.train(was)
    return total[0]


def train_memory(backbone, pre, batch: int, trainable: int, total: int, trained=None,
                 baseline_mb: float | None = None) -> dict:
    return {"process": current_rss_mb() if baseline_mb is None else baseline_mb,
            "weights": total * 4 / MB, "gradients": trainable * 4 / MB, "optimizer": trainable * 8 / MB,
            "activations": batch * activation_elements(backbone, pre, trained) * 4 / MB,
            "images": batch * 3 * pre.size * pre.size * 4 * 2 / MB}


def encode_memory(backbone, pre, batch: int, images: int, baseline_mb: float | None = None) -> dict:
    params = sum(p.numel() for p in backbone.parameters())
    # without gradients only a few activations are alive at once: a tenth of the training figure
    return {"process": current_rss_mb() if baseline_mb is None else baseline_mb, "weights": params * 4 / MB,
            "activations": batch * activation_elements(backbone, pre) / ACTIVATION_FACTOR * 4 / MB / 10,
            "features": images * backbone.feature_dim * 4 / MB}


def encode_seconds_per_image(ctx: RunContext, backbone, pre, key: str) -> float:
    """Measured once per model and size on this machine (16 real images, decoding included), then
    remembered for a day (a measurement on a busy machine must not skew every later estimate)."""
    from ..models.image_preprocess import to_tensor
    from .image_classification import open_images

    path = ctx.cache_dir / "throughput.json"
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        known = {}
    entry = known.get(f"image:{key}")
    if not (isinstance(entry, dict) and time.time() - entry.get("at", 0) < THROUGHPUT_MAX_AGE_S):
        import torch

        train = ctx.splits.train
        idx = list(range(min(16, len(train))))
        backbone.eval()

        def run():
            with torch.no_grad():
                backbone.features(to_tensor(open_images(train, idx), pre))
        seconds = time_steps(run, repeats=1) / max(len(idx), 1)
        known[f"image:{key}"] = entry = {"seconds_per_image": seconds, "at": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known))
    return float(entry["seconds_per_image"])


def estimate_frozen(ctx: RunContext, datasets, batch_size: int) -> Estimate:
    """A frozen-backbone strategy that encodes `datasets` (those not in the feature cache yet)
    before the test split."""
    from ..models.embeddings import FeatureCache
    from ..models.vision import load_image_model

    baseline = current_rss_mb()
    backbone = load_image_model(ctx.model)
    pre = backbone.preprocess
    cache = FeatureCache(ctx.cache_dir / "features")
    images = sum(len(ds) for ds in datasets if not cache.contains(feature_key(cache, cache_key(ctx), backbone, ds)))
    per_image = encode_seconds_per_image(ctx, backbone, pre, f"{cache_key(ctx)}:{pre.size}")
    n_test = len(ctx.splits.test)
    breakdown = encode_memory(backbone, pre, batch_size, len(ctx.splits.train) + n_test, baseline)
    total = sum(p.numel() for p in backbone.parameters())
    del backbone
    gc.collect()
    return Estimate(sum(breakdown.values()), (images + n_test) * per_image, breakdown,
                    f"{images + n_test} images to encode at {pre.size}px", 0, total)


def estimate_training(ctx: RunContext, strategy) -> Estimate:
    """A fine-tuning strategy (strategy.build(ctx) -> backbone with what it trains set trainable):
    memory at the run's batch and size; time from real steps on TIMED_BATCH images, scaled."""
    baseline = current_rss_mb()
    p = ctx.params
    backbone = strategy.build(ctx)
    pre = preprocess_for(backbone, p.image_size)
    trainable = sum(q.numel() for q in backbone.parameters() if q.requires_grad)
    total = sum(q.numel() for q in backbone.parameters())
    trained = strategy.trained_modules(backbone)
    breakdown = train_memory(backbone, pre, p.batch_size, trainable, total, trained, baseline)
    steps = strategy.steps(ctx)
    if sum(breakdown.values()) > memory_budget_mb() * HEADROOM:
        del backbone
        gc.collect()
        return Estimate(sum(breakdown.values()), 0.0, breakdown, "not timed: it does not fit", trainable, total)
    step_s = _time_step(ctx, backbone, pre, min(p.batch_size, TIMED_BATCH)) * p.batch_size / min(p.batch_size,
                                                                                                  TIMED_BATCH)
    del backbone
    gc.collect()
    evals = len(ctx.splits.validation) * min(p.epochs, 20) + len(ctx.splits.test)
    seconds = steps * step_s + evals * step_s / p.batch_size / 3
    return Estimate(sum(breakdown.values()), seconds, breakdown,
                    f"{steps} steps x {step_s:.2f}s at {pre.size}px; trainable {trainable:,} of {total:,} parameters",
                    trainable, total)


def _time_step(ctx: RunContext, backbone, pre, batch: int) -> float:
    import torch

    from ..models.image_preprocess import to_tensor
    from .image_classification import open_images

    train = ctx.splits.train
    idx = [i % len(train) for i in range(batch)]
    labels = torch.zeros(batch, dtype=torch.long)
    params = [q for q in backbone.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0)
    rng = np.random.default_rng(0)
    backbone.train()

    def step():
        x = to_tensor(open_images(train, idx), pre, train=True, rng=rng)
        loss = torch.nn.functional.cross_entropy(backbone(x), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time_steps(step)


def memory_options(ctx: RunContext, strategy, usable_mb: float) -> list[dict]:
    """Changes that lower a fine-tuning run's peak, cheapest in quality first: a smaller batch with
    gradient accumulation (the same effective batch), smaller images, then a lighter strategy.
    Those that fit `usable_mb`; else the last (the lightest) so the refusal still names one."""
    from .registry import get_strategy

    p = ctx.params
    options: list[dict] = []
    own = strategy.build(ctx)
    trainable = sum(q.numel() for q in own.parameters() if q.requires_grad)
    total = sum(q.numel() for q in own.parameters())
    trained = strategy.trained_modules(own)
    pre = preprocess_for(own, p.image_size)

    def peak(batch: int, size: int) -> float:
        return sum(train_memory(own, preprocess_for(own, size), batch, trainable, total, trained).values())

    batch, accum = p.batch_size, p.gradient_accumulation
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        options.append({"description": f"batch {batch} with gradient accumulation {accum} (same effective batch)",
                        "strategy": strategy.name, "params": {"batch_size": batch, "gradient_accumulation": accum},
                        "peak_mb": peak(batch, pre.size)})
        if options[-1]["peak_mb"] <= usable_mb:
            break
    size = pre.size
    while size > 32:
        size = max(32, int(size * 0.75) // 8 * 8)
        options.append({"description": f"images at {size}px instead of {pre.size}px (less detail)",
                        "strategy": strategy.name, "params": {"image_size": size},
                        "peak_mb": peak(p.batch_size, size)})
        if options[-1]["peak_mb"] <= usable_mb:
            break
    if strategy.lighter:
        name, why = strategy.lighter
        lighter = get_strategy(name)
        changes = {k: getattr(p, k) for k in ("batch_size", "image_size", "epochs") if k in lighter.Params.model_fields}
        if hasattr(lighter, "build"):
            sub = ctx.__class__(**{**ctx.__dict__, "params": lighter.Params(**changes)})
            model = lighter.build(sub)
            mem = train_memory(model, pre, p.batch_size, sum(q.numel() for q in model.parameters() if q.requires_grad),
                               total, lighter.trained_modules(model))
            del model
        else:                     # frozen features: a forward pass at a time
            mem = encode_memory(own, own.preprocess, 64, len(ctx.splits.train) + len(ctx.splits.test))
        options.append({"description": why, "strategy": name, "params": changes, "peak_mb": sum(mem.values())})
    del own
    gc.collect()
    fitting = [o for o in options if o["peak_mb"] <= usable_mb]
    return fitting or options[-1:]


def epochs_steps(n_train: int, batch: int, accumulation: int, epochs: int, min_steps: int) -> int:
    per_epoch = math.ceil(max(n_train, 1) / batch / accumulation)
    return per_epoch * max(epochs, math.ceil(min_steps / per_epoch))
