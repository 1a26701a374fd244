"""image-few-shot (`few-shot` on image data): nearest class mean ("prototypes") on frozen backbone
features, from k images a class.

With a handful of images a class a logistic head has little to fit and its cross-validation has
nothing to hold out; the mean of a class's features is the estimate that needs no tuning (Snell
et al.'s prototypical networks; Mensink et al.'s nearest class mean). It is a linear head: the
squared distance to a class mean, -||f - m_c||^2 = 2 m_c.f - ||m_c||^2 - ||f||^2, and ||f||^2 is
the same for every class, so the classifier is W = 2 m_c / T, b = -||m_c||^2 / T on the
backbone's features, served by the same predictor as the probe. The temperature T only spreads
the probabilities (never the ranking): it is the one that fits the validation images best (their
log-likelihood), or the mean squared distance when there are none.

k defaults to 8 a class, as the text few-shot: the strategy answers "what do a few labelled
images a class give?" in a comparison; `--set k=0` uses every training image.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..data import sample_per_class
from .base import ConfigError, Params, RunContext, StrategyBase, register
from .image_classification import IMAGE_CLASSIFICATION
from .image_estimates import estimate_frozen
from .image_probe import LOAD_SECONDS, SECONDS_PER_IMAGE, encode_splits
from .linear_probe import label_ids

TEMPERATURES = np.geomspace(0.01, 100.0, 41)      # relative to the mean squared distance


class ImagePrototypeParams(Params):
    k: int = Field(8, ge=0, le=100_000, description="labelled images a class (0: all of them)")
    batch_size: int = Field(64, ge=1, le=4096, description="images a forward pass encodes")


def prototype_head(x: np.ndarray, y: np.ndarray, n_classes: int, x_val: np.ndarray | None = None,
                   y_val: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(weight [n_classes, dim], bias [n_classes], temperature) of the nearest-class-mean classifier.
    A class without examples gets a bias that never wins."""
    dim = x.shape[1]
    means = np.zeros((n_classes, dim), dtype=np.float64)
    present = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        rows = x[y == c]
        if len(rows):
            means[c], present[c] = rows.mean(0), True
    weight, bias = 2 * means, -(means ** 2).sum(1)
    # mean squared distance of an example to the class means: ||x||^2 - (2 m.x - ||m||^2)
    x64 = x.astype(np.float64)
    scale = float(np.mean((x64 ** 2).sum(1)[:, None] - (x64 @ weight[present].T + bias[present]))) or 1.0
    temperature = scale
    if x_val is not None and y_val is not None and len(y_val):
        logits = x_val.astype(np.float64) @ weight.T + bias
        logits[:, ~present] = -np.inf
        known = y_val >= 0
        temperature = min((scale * t for t in TEMPERATURES),
                          key=lambda T: _nll(logits[known] / T, y_val[known]))
    weight, bias = weight / temperature, bias / temperature
    bias[~present] = -1e4
    return weight.astype(np.float32), bias.astype(np.float32), float(temperature)


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())


@register
class ImagePrototypes(StrategyBase):
    name = "image-few-shot"
    task = IMAGE_CLASSIFICATION
    aliases = ("few-shot",)
    family = "transfer"
    rank = 20
    in_default_compare = True
    advice = "A few labelled images a class (8 by default): class means of frozen features. For when labelling is expensive."
    summary = "Nearest class mean on frozen features of k images a class. No training; for scarce labels."
    Params = ImagePrototypeParams

    def check(self, ctx: RunContext) -> None:
        if len(ctx.splits.label_names) < 2:
            raise ConfigError("few-shot needs at least 2 labels")

    def shots(self, ctx: RunContext):
        k = ctx.params.k
        return ctx.splits.train if not k else sample_per_class(ctx.splits.train, k, seed=ctx.seed)

    def estimate(self, ctx: RunContext):
        return estimate_frozen(ctx, (self.shots(ctx), ctx.splits.validation), ctx.params.batch_size)

    def trainable_params(self, predictor, ctx: RunContext, measured: int) -> int:
        return int(predictor.weight.size + predictor.bias.size)

    def encode_work(self, *, train, val, test, labels, cached, params) -> dict:
        k = int(params.get("k") or 8)
        return {"texts": min(labels * k, int(train)) + val + test}

    def advise(self, facts, budget: str, cuda: bool):
        if facts.smallest_class * 0.7 < 15:
            return 20, ("A handful of images a label: class means of pretrained features need no training "
                        "and do not overfit.")
        return None

    def rough_seconds(self, facts, per_text: float, scale: float, params: dict) -> float:
        k = int(params.get("k") or 8)
        return LOAD_SECONDS + (min(facts.labels * k, facts.rows) + facts.rows * 0.3) * SECONDS_PER_IMAGE

    def fit(self, ctx: RunContext):
        from ..models.image_predictors import ImageHeadPredictor
        from ..models.vision import load_image_model

        names = ctx.splits.label_names
        shots = self.shots(ctx)
        backbone = load_image_model(ctx.model)
        feats = encode_splits(ctx, backbone, {"shots": shots, "validation": ctx.splits.validation},
                              ctx.params.batch_size)
        val = ctx.splits.validation
        weight, bias, temperature = prototype_head(
            feats["shots"], label_ids(shots.labels, names), len(names),
            feats["validation"] if len(val) else None, label_ids(val.labels, names) if len(val) else None)
        ctx.notes.update(examples_used=len(shots), temperature=temperature)
        cache, key = ctx.notes.pop("_cache")
        return ImageHeadPredictor(backbone, weight, bias, names, ctx.model.ref, cache=cache, cache_key=key)
