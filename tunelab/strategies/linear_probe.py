"""linear-probe: frozen encoder features (computed once, cached on disk by model and data),
then a logistic-regression head."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..models import load_sentence_encoder
from ..models.embeddings import FeatureCache, encode
from ..models.predictors import EmbeddingHeadPredictor, model_key
from ..hardware.efficiency import work_note
from ..training.progress import ProgressEvent
from ..training.work import WorkCounter
from .advice import LOAD_SECONDS, split_rows
from .base import Params, RunContext, StrategyBase, register
from .classification import TEXT_CLASSIFICATION
from .estimates import estimate_transfer, uncached_rows
from .heads import fit_logistic_head


class LinearProbeParams(Params):
    C: float | None = Field(None, gt=0, description=(
        "inverse L2 strength; None: chosen by cross-validation on train + validation when they are small "
        "(the head then trains on both), on the validation split otherwise"))
    batch_size: int = Field(64, ge=1, le=4096)
    max_iter: int = Field(300, ge=10)


def label_ids(labels: list[str], names: list[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    return np.array([index.get(lab, -1) for lab in labels], dtype=np.int64)


@register
class LinearProbe(StrategyBase):
    name = "linear-probe"
    bench = "quick"
    task = TEXT_CLASSIFICATION
    family = "transfer"
    rank = 30
    advice = "Seconds to train, cheap to serve. Usually the best value on short texts."
    caches = frozenset({"test", "train"})
    in_default_compare = baseline = True
    summary = "Frozen encoder features + a trained linear head. Fast, strong on short texts."
    Params = LinearProbeParams

    def check(self, ctx: RunContext) -> None:
        pass

    def estimate(self, ctx: RunContext):
        return estimate_transfer(ctx, uncached_rows(ctx, (ctx.splits.train, ctx.splits.validation)))

    def trainable_params(self, predictor, ctx: RunContext, measured: int) -> int:
        return int(predictor.weight.size + predictor.bias.size)

    def encode_work(self, *, train, val, test, labels, cached, params) -> dict:
        return {"texts": (0 if "train" in cached else train + val) + test, "fit_rows": train}

    def advise(self, facts, budget: str, cuda: bool):
        if budget == "fast":
            return 30, "You asked for speed: a linear probe trains in seconds and serves at the model's speed."
        return 90, ("Enough examples and short texts: a linear probe is usually within a point or two of "
                    "fine-tuning at a fraction of the cost. Compare it with LoRA to be sure.")

    def rough_seconds(self, facts, per_text: float, scale: float, params: dict) -> float:
        return LOAD_SECONDS + sum(split_rows(facts)) * per_text

    def fit(self, ctx: RunContext) -> EmbeddingHeadPredictor:
        p: LinearProbeParams = ctx.params
        encoder = load_sentence_encoder(ctx.model.path)
        cache = FeatureCache(ctx.cache_dir / "features")
        key = model_key(ctx.model.path)
        names = ctx.splits.label_names
        feats, total, done = {}, len(ctx.splits.train) + len(ctx.splits.validation), 0
        work = WorkCounter(phase="encoding").begin()
        for split, ds in (("train", ctx.splits.train), ("validation", ctx.splits.validation)):
            def tick(n, _of, base=done, split=split):
                ctx.progress(ProgressEvent("encode", base + n, total, message=f"encoding {split}"))

            ctx.progress(ProgressEvent("encode", done, total, message=f"encoding {split} ({len(ds)} texts)"))
            feats[split] = encode(encoder, ds.texts, cache=cache, model_key=key,
                                  precision=ctx.precision, batch_size=p.batch_size, progress=tick, work=work)
            done += len(ds)
        ctx.progress(ProgressEvent("encode", total, total))
        ctx.notes["feature_cache"] = {"hits": cache.hits, "misses": cache.misses}
        y_val = label_ids(ctx.splits.validation.labels, names)
        fit = fit_logistic_head(feats["train"], label_ids(ctx.splits.train.labels, names), len(names),
                                feats["validation"], y_val, p.C, p.max_iter, seed=ctx.seed)
        ctx.notes.update(C=fit.C, head=fit.selection, work=work_note(work.summary(), encoder[0].model, "forward"))
        return EmbeddingHeadPredictor(encoder, fit.weight, fit.bias, names, ctx.model.ref, cache=cache,
                                      cache_key=key, precision=ctx.precision)
