"""zero-shot: no training. Embed the texts and the label names (or descriptions the user wrote)
and predict the most similar label."""

from __future__ import annotations

import re

import numpy as np
from pydantic import Field

from ..models import load_sentence_encoder
from ..models.embeddings import FeatureCache, encode
from ..models.predictors import EmbeddingHeadPredictor, model_key
from .base import ConfigError, Params, RunContext, register


class ZeroShotParams(Params):
    label_descriptions: dict[str, str] = Field(default_factory=dict,
                                               description="label -> a sentence describing it")
    template: str = Field("{label}", description="how a label name becomes a sentence")
    temperature: float = Field(0.05, gt=0, description="softmax temperature over cosine similarity")


def humanize(label: str) -> str:
    """'card_arrival' -> 'card arrival', 'NotSpam' -> 'not spam': closer to how texts read."""
    label = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)
    return re.sub(r"[_\-.]+", " ", label).strip().lower()


@register
class ZeroShot:
    name = "zero-shot"
    family = "transfer"
    summary = "No training: match texts to label names by embedding similarity. Cost ~0."
    Params = ZeroShotParams

    def check(self, ctx: RunContext) -> None:
        unknown = set(ctx.params.label_descriptions) - set(ctx.splits.label_names)
        if unknown:
            raise ConfigError(f"label_descriptions names labels not in the data: {sorted(unknown)}")
        if "{label}" not in ctx.params.template:
            raise ConfigError("template must contain {label}")

    def fit(self, ctx: RunContext) -> EmbeddingHeadPredictor:
        p: ZeroShotParams = ctx.params
        encoder = load_sentence_encoder(ctx.model.path)
        names = ctx.splits.label_names
        sentences = [p.label_descriptions.get(n) or p.template.format(label=humanize(n)) for n in names]
        label_emb = encode(encoder, sentences, precision=ctx.precision)
        # Cosine similarity of normalised embeddings, scaled into logits.
        weight = label_emb / p.temperature
        cache = FeatureCache(ctx.cache_dir / "features")
        return EmbeddingHeadPredictor(encoder, weight, np.zeros(len(names), dtype=np.float32), names,
                                      ctx.model.ref, cache=cache, cache_key=model_key(ctx.model.path),
                                      precision=ctx.precision)
