"""image-full (`full` on image data): fine-tune the whole network and a new head, the backbone at a
lower learning rate than the head, on augmented batches (flip + random resized crop).

It runs the one training loop (training/loop.py: checkpoints, resume, progress, early stopping,
best-step selection) with an image task plugged in (`ImageLoopTask`): batches are images instead
of token ids, all of the same cost.

- Each image is decoded once into memory (shrunk to twice the training size: a random resized
  crop needs no more) and augmented from there, so decoding does not dominate the steps; past
  IN_MEMORY_MB they are decoded from the extracted files each batch instead.
- BatchNorm statistics stay the pretrained ones (its layers run in eval mode; their scale and
  shift are trained): batches of 8-32 small images estimate them poorly, and a checkpoint holds
  parameters only, so with frozen statistics a resumed or best-step model is exactly the trained
  one.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..hardware.efficiency import work_note
from .base import ConfigError, Params, RunContext, StrategyBase, register
from .finetune import fingerprint
from .image_classification import IMAGE_CLASSIFICATION
from .image_estimates import epochs_steps, estimate_training, memory_options, preprocess_for
from .linear_probe import label_ids

IN_MEMORY_MB = 1024
"""Decoded training images kept in memory at most; more are decoded from disk each batch."""
SMALL_BATCH = 8
CPU_MAX_SIZE = 128
"""On CPU a model whose own input is larger trains at this size unless image_size is set: EfficientNet-
Lite0 at 224px costs ~3x the time of 128px a step, and CIFAR-sized images gain nothing from it."""
SAMPLES_PER_S = 40.0          # the advisor's rough training rate (EfficientNet-Lite0 at 128px, 2 cores)


class ImageFineTuneParams(Params):
    epochs: int = Field(3, ge=1, le=100)
    min_steps: int = Field(100, ge=0, description="small data: more epochs until this many steps")
    learning_rate: float = Field(3e-4, gt=0, lt=1, description="the pretrained layers' (AdamW)")
    head_learning_rate_scale: float = Field(10.0, gt=0, le=1000, description=(
        "the new head learns this many times faster than the pretrained layers"))
    batch_size: int = Field(32, ge=1, le=4096)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    image_size: int | None = Field(None, ge=16, le=2048, description=(
        f"pixels a side; None: the model's own (at most {CPU_MAX_SIZE} on CPU)"))
    head_init: str = Field("probe", pattern="^(probe|random)$", description=(
        "probe: the new head starts as a linear probe on the frozen features (LP-FT), so fine-tuning "
        "starts from a good classifier instead of pulling the features towards a random one; random: "
        "a fresh head"))
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    early_stopping_patience: int = Field(2, ge=1)
    checkpoint_every: int = Field(200, ge=1, description="optimizer steps between checkpoints")

    def for_data(self, splits) -> "ImageFineTuneParams":
        """Tiny data gets smaller batches unless a batch size was set (as the text fine-tunes)."""
        if "batch_size" in self.model_fields_set:
            return self
        batch = min(self.batch_size, max(SMALL_BATCH, len(splits.train) // 8))
        return self if batch == self.batch_size else self.model_copy(update={"batch_size": batch})


class ImageSplit:
    """A split as the loop batches it: decoded images (in memory when they fit) and label ids;
    `lengths` are all 1 (an image costs the same as any other at a fixed size)."""

    def __init__(self, ds, labels: np.ndarray, size: int):
        self.ds, self.labels = ds, labels
        self.lengths = np.ones(len(labels), dtype=np.int64)
        self.side = 2 * size
        fits = len(ds) * self.side * self.side * 3 <= IN_MEMORY_MB * 2**20
        self.cache = [self._load(i) for i in range(len(ds))] if fits else None

    def _load(self, i: int):
        from PIL import Image

        img = self.ds.open(i)
        scale = self.side / min(img.size)
        if scale < 1:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.Resampling.BILINEAR)
        img.load()
        return img

    def images(self, index) -> list:
        return [self.cache[i] if self.cache is not None else self._load(i) for i in index]


def freeze_batchnorm(model) -> None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def predict_logits(model, split: ImageSplit, pre, batch_size: int = 64) -> np.ndarray:
    import torch

    from ..models.image_preprocess import to_tensor

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(split.labels), batch_size):
            index = range(start, min(start + batch_size, len(split.labels)))
            out.append(model(to_tensor(split.images(index), pre)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class ImageLoopTask:
    """What training/loop.py needs of an image classifier: a batch's loss on augmented images and
    the validation macro-F1 (with its interval, for a comparison's pruning)."""

    metric_name = "val_macro_f1"

    def __init__(self, pre, labels: int):
        self.pre, self.labels, self.batches = pre, labels, 0

    def size(self, split: ImageSplit) -> int:
        return len(split.labels)

    def loss(self, model, split: ImageSplit, index, device, cfg):
        import torch

        from ..models.device import autocast
        from ..models.image_preprocess import to_tensor

        freeze_batchnorm(model)
        # Seeded by the run and the batch's place in it: the same run augments the same way.
        rng = np.random.default_rng([cfg.seed, self.batches])
        self.batches += 1
        x = to_tensor(split.images(index), self.pre, train=True, rng=rng).to(device)
        with autocast(cfg.device, cfg.precision):
            logits = model(x)
        y = torch.as_tensor(split.labels[index], dtype=torch.long, device=logits.device)
        return torch.nn.functional.cross_entropy(logits.float(), y), len(index)

    def evaluate(self, model, split: ImageSplit, cfg) -> tuple[float, dict]:
        import torch
        from sklearn.metrics import f1_score

        from ..evaluation.intervals import macro_f1_accuracy_intervals
        from ..training.loop import VAL_RESAMPLES

        logits = predict_logits(model, split, self.pre)
        pred = logits.argmax(1)
        metric = float(f1_score(split.labels, pred, average="macro", zero_division=0))
        loss = float(torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(split.labels)))
        interval = macro_f1_accuracy_intervals(split.labels, pred, logits.shape[1],
                                               resamples=VAL_RESAMPLES)["macro_f1_interval"]
        return metric, {self.metric_name: metric, "val_loss": loss, f"{self.metric_name}_interval": interval}


def probe_head(ctx: RunContext, model, pre) -> None:
    """Start the new head as the linear probe at the training size (Kumar et al. 2022, LP-FT: a
    random head's large early gradients distort the pretrained features before it is any good).
    The features come from the shared cache when a probe at this size ran on these images."""
    import torch

    from .image_probe import encode_splits, fit_head

    names, train, val = ctx.splits.label_names, ctx.splits.train, ctx.splits.validation
    own = model.preprocess
    model.preprocess = pre
    try:
        feats = encode_splits(ctx, model, {"train": train, "validation": val}, 64)
    finally:
        model.preprocess = own
    ctx.notes.pop("_cache", None)
    fit = fit_head(ctx, feats["train"], label_ids(train.labels, names), feats["validation"] if len(val) else None,
                   label_ids(val.labels, names) if len(val) else None)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(fit.weight))
        model.head.bias.copy_(torch.from_numpy(np.maximum(fit.bias, -50.0)))
    ctx.notes["head_init"] = {"C": fit.C, "selection": fit.selection.get("selection")}


class ImageFineTuneBase(StrategyBase):
    """What full and partial-unfreeze share: building the network, the loop, the estimate."""
    distributed = True          # trains on torchrun's ranks (training/loop.py)

    family = "fine-tune"
    Params = ImageFineTuneParams

    def check(self, ctx: RunContext) -> None:
        if len(ctx.splits.label_names) < 2:
            raise ConfigError("a classifier needs at least 2 labels")

    def build(self, ctx: RunContext):
        """The backbone with a new head for the labels, with what this strategy trains trainable."""
        import torch

        from ..models.vision import load_image_model

        torch.manual_seed(ctx.seed)        # the new head's initialisation is part of the seeded run
        model = load_image_model(ctx.model)
        model.reset_head(len(ctx.splits.label_names))
        model.tunelab_new_parameters = {id(p) for p in model.head.parameters()}
        self.freeze(model, ctx.params)
        return model

    def freeze(self, model, params) -> None:
        """Full fine-tuning: everything trains."""

    def trained_modules(self, model) -> list:
        """The modules `build` left trainable (pre-flight counts their activations)."""
        return getattr(model, "tunelab_trained", [model])

    def size(self, ctx: RunContext, model) -> int:
        p = ctx.params
        own = model.preprocess.size
        return p.image_size or (own if ctx.device != "cpu" else min(own, CPU_MAX_SIZE))

    def steps(self, ctx: RunContext) -> int:
        p = ctx.params
        return epochs_steps(len(ctx.splits.train), p.batch_size, p.gradient_accumulation, p.epochs, p.min_steps)

    def estimate(self, ctx: RunContext):
        if ctx.params.image_size is None:     # the size the run will use, known once the model is
            from ..models.vision import load_image_model

            size = self.size(ctx, load_image_model(ctx.model))
            ctx.params = ctx.params.model_copy(update={"image_size": size})
        return estimate_training(ctx, self)

    def memory_options(self, ctx: RunContext, usable_mb: float) -> list[dict]:
        return memory_options(ctx, self, usable_mb)

    def rough_seconds(self, facts, per_text: float, scale: float, params: dict) -> float:
        batch = int(params.get("batch_size") or 32)
        train = facts.rows * 0.7
        steps = epochs_steps(int(train), batch, 1, int(params.get("epochs") or 3), int(params.get("min_steps") or 100))
        return 3.0 + steps * batch / SAMPLES_PER_S

    def fit(self, ctx: RunContext):
        from ..models.image_predictors import ImageClassifierPredictor
        from ..training.costs import count_params
        from ..training.loop import LoopConfig, train_loop

        p: ImageFineTuneParams = ctx.params
        model = self.build(ctx)
        pre = preprocess_for(model, self.size(ctx, model))
        names = ctx.splits.label_names
        train = ImageSplit(ctx.splits.train, label_ids(ctx.splits.train.labels, names), pre.size)
        val = ctx.splits.validation
        validation = ImageSplit(val, label_ids(val.labels, names), pre.size) if len(val) else None
        cfg = LoopConfig(epochs=p.epochs, min_steps=p.min_steps, learning_rate=p.learning_rate,
                         batch_size=p.batch_size, gradient_accumulation=p.gradient_accumulation,
                         weight_decay=p.weight_decay, warmup_ratio=p.warmup_ratio, precision=ctx.precision,
                         device=ctx.device, early_stopping_patience=p.early_stopping_patience,
                         checkpoint_every=p.checkpoint_every, seed=ctx.seed,
                         head_lr_scale=p.head_learning_rate_scale)
        if p.head_init == "probe":
            probe_head(ctx, model, pre)
        task = ImageLoopTask(pre, len(names))
        result = train_loop(model, train, validation, cfg, ctx.work_dir / "checkpoints", 0,
                            fingerprint=fingerprint(ctx, self.name), progress=ctx.progress, task=task)
        model.eval()
        model.preprocess = pre          # the predictor (and the saved model) sees images at the trained size
        trainable, total = count_params(model)
        ctx.notes.update(resumed_from_step=result.resumed_from_step, steps=result.state.global_step,
                         history=result.history, trainable_params=trainable, total_params=total,
                         image_size=pre.size, work=work_note(result.work.summary(), model),
                         stopping=result.stopping,
                         best_val_macro_f1=max((h["val_macro_f1"] for h in result.history if "val_macro_f1" in h),
                                               default=None))
        trained = self.trained_modules(model)
        return ImageClassifierPredictor(model, names, ctx.model.ref, device=ctx.device, precision=ctx.precision,
                                        trained_blocks=None if trained == [model] else len(trained) - 1)


@register
class ImageFull(ImageFineTuneBase):
    name = "image-full"
    task = IMAGE_CLASSIFICATION
    aliases = ("full",)
    rank = 50
    in_default_compare = True
    lighter = ("partial-unfreeze", "partial-unfreeze instead: the last blocks and the head trained")
    advice = "All layers trained. The quality ceiling when your images differ from the pretraining; the most time and memory."
    summary = "Fine-tune the whole network (backbone at a lower rate than the new head) on augmented images."

    def advise(self, facts, budget: str, cuda: bool):
        if budget == "best" and (cuda or facts.rows <= 5000):
            return 40, ("You asked for the best quality: fine-tuning adapts the backbone itself to your images.")
        return None
