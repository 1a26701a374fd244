"""full: fine-tune every transformer layer and a new classification head."""

from __future__ import annotations

from pydantic import Field

from .base import RunContext, register
from .finetune import (FineTuneParams, build_classifier, check_common, load_tokenizer_for, predictor,
                       run_loop)


class FullParams(FineTuneParams):
    # The word-embedding table is half of a small encoder's weights; on CPU its dense gradient
    # and optimizer update cost ~20% of each step, and tuning it rarely helps classification.
    freeze_embeddings: bool = Field(True, description="keep the word-embedding table frozen")


@register
class Full:
    name = "full"
    family = "fine-tune"
    summary = "Fine-tune all layers. Best quality on long or unusual texts; most compute and memory."
    Params = FullParams

    def check(self, ctx: RunContext) -> None:
        check_common(ctx)

    def build(self, ctx: RunContext):
        model = build_classifier(ctx)
        if ctx.params.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        return model

    def fit(self, ctx: RunContext):
        model = self.build(ctx)
        tokenizer = load_tokenizer_for(ctx)
        run_loop(ctx, model, tokenizer, self.name)
        return predictor(ctx, model, tokenizer, adapter=False)
