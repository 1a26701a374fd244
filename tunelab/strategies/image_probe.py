"""image-linear-probe (`linear-probe` on image data): frozen backbone features, computed once and
cached on disk by model, preprocessing and image content, then the logistic head the text probe
uses (strategies/heads.py: C by cross-validation on small data)."""

from __future__ import annotations

from pydantic import Field

from ..hardware.efficiency import work_note
from ..training.progress import ProgressEvent
from ..training.work import WorkCounter
from .base import Params, RunContext, StrategyBase, register
from .heads import fit_logistic_head
from .image_classification import IMAGE_CLASSIFICATION
from .image_estimates import cache_key, estimate_frozen
from .linear_probe import label_ids

LOAD_SECONDS = 3.0
SECONDS_PER_IMAGE = 0.02      # the advisor's rough encode rate (EfficientNet-Lite0 at 224px, 2 cores)


class ImageProbeParams(Params):
    C: float | None = Field(None, gt=0, description=(
        "inverse L2 strength; None: chosen by cross-validation on train + validation when they are small "
        "(the head then trains on both), on the validation split otherwise"))
    batch_size: int = Field(64, ge=1, le=4096, description="images a forward pass encodes")
    max_iter: int = Field(300, ge=10)


def encode_splits(ctx: RunContext, backbone, splits, batch_size: int) -> dict:
    """Frozen features of the named splits ({name: dataset}), through the shared feature cache;
    records the cache's hits and misses and the encoder's work in ctx.notes."""
    from ..models.embeddings import FeatureCache
    from ..models.vision import encode_images

    cache = FeatureCache(ctx.cache_dir / "features")
    key = cache_key(ctx)
    total, done, feats = sum(len(ds) for ds in splits.values()), 0, {}
    work = WorkCounter(phase="encoding").begin()
    backbone.eval()
    for name, ds in splits.items():
        def tick(n, _of, base=done, name=name):
            ctx.progress(ProgressEvent("encode", base + n, total, message=f"encoding {name}"))

        ctx.progress(ProgressEvent("encode", done, total, message=f"encoding {name} ({len(ds)} images)"))
        feats[name] = encode_images(backbone, ds, cache=cache, model_key=key, batch_size=batch_size,
                                    progress=tick, work=work)
        done += len(ds)
    ctx.progress(ProgressEvent("encode", total, total))
    ctx.notes["feature_cache"] = {"hits": cache.hits, "misses": cache.misses}
    ctx.notes["_cache"] = (cache, key)      # the predictor caches the test split's features too
    summary = work.summary()
    if summary["rows"]:
        ctx.notes["work"] = work_note(summary, None, "forward")
    return feats


def fit_head(ctx: RunContext, x, y, x_val, y_val, C: float | None = None, max_iter: int = 300):
    """The text probe's logistic head (strategies/heads.py) on image features, returned as a head
    on the raw features. The features are scaled to a mean norm of 1 for the fit: the head's C
    candidates and tolerances suit the unit-norm sentence embeddings it was made for, and a
    backbone's pooled features can have any scale (ResNet-20's post-ReLU means: ~10x, which also
    makes L-BFGS take ~4x the iterations; measured: 5.8 s -> 1.4 s on cifar10-mini, macro-F1
    0.823 -> 0.829). Scaling is folded back into the weights, so the predictor sees raw features."""
    import numpy as np

    norm = float(np.linalg.norm(x, axis=1).mean()) if len(x) else 1.0
    norm = norm if norm > 0 else 1.0
    n_classes = len(ctx.splits.label_names)
    fit = fit_logistic_head(x / norm, y, n_classes, None if x_val is None else x_val / norm, y_val, C, max_iter,
                            seed=ctx.seed)
    return fit._replace(weight=(fit.weight / norm).astype(np.float32), selection={**fit.selection,
                                                                                  "feature_scale": norm})


@register
class ImageLinearProbe(StrategyBase):
    name = "image-linear-probe"
    task = IMAGE_CLASSIFICATION
    aliases = ("linear-probe",)
    family = "transfer"
    rank = 30
    is_default = True
    caches = frozenset({"test", "train"})
    in_default_compare = baseline = True
    advice = "Seconds to minutes, cheap to serve. Usually the best value when the backbone's features suit the images."
    summary = "Frozen image-backbone features + a trained linear head. Fast; strong when the pretraining resembles your images."
    Params = ImageProbeParams

    def check(self, ctx: RunContext) -> None:
        pass

    def estimate(self, ctx: RunContext):
        return estimate_frozen(ctx, (ctx.splits.train, ctx.splits.validation), ctx.params.batch_size)

    def trainable_params(self, predictor, ctx: RunContext, measured: int) -> int:
        return int(predictor.weight.size + predictor.bias.size)

    def encode_work(self, *, train, val, test, labels, cached, params) -> dict:
        return {"texts": (0 if "train" in cached else train + val) + test, "fit_rows": train}

    def advise(self, facts, budget: str, cuda: bool):
        return 60, ("A linear probe on a pretrained backbone trains in seconds and is usually within a few "
                    "points of fine-tuning on a few hundred images a class. Compare it with full to be sure.")

    def rough_seconds(self, facts, per_text: float, scale: float, params: dict) -> float:
        return LOAD_SECONDS + facts.rows * SECONDS_PER_IMAGE

    def fit(self, ctx: RunContext):
        from ..models.image_predictors import ImageHeadPredictor
        from ..models.vision import load_image_model

        p: ImageProbeParams = ctx.params
        backbone = load_image_model(ctx.model)
        names = ctx.splits.label_names
        feats = encode_splits(ctx, backbone, {"train": ctx.splits.train, "validation": ctx.splits.validation},
                              p.batch_size)
        val = ctx.splits.validation
        fit = fit_head(ctx, feats["train"], label_ids(ctx.splits.train.labels, names),
                       feats["validation"] if len(val) else None, label_ids(val.labels, names) if len(val) else None,
                       p.C, p.max_iter)
        ctx.notes.update(C=fit.C, head=fit.selection)
        cache, key = ctx.notes.pop("_cache")
        return ImageHeadPredictor(backbone, fit.weight, fit.bias, names, ctx.model.ref, cache=cache, cache_key=key)
