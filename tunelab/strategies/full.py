"""full: fine-tune every transformer layer and a new classification head."""

from __future__ import annotations

from pydantic import Field

from .base import RunContext, StrategyBase, register
from .classification import TEXT_CLASSIFICATION
from .estimates import estimate_finetune
from .finetune import (FineTuneParams, build_classifier, check_common, load_tokenizer_for, predictor,
                       run_loop)


class FullParams(FineTuneParams):
    # The word-embedding table is half of a small encoder's weights; on CPU its dense gradient
    # and optimizer update cost ~20% of each step, and tuning it rarely helps classification.
    freeze_embeddings: bool = Field(True, description="keep the word-embedding table frozen")
    head_learning_rate_scale: float = Field(10.0, gt=0, le=1000, description=(
        "the new classification head learns this many times faster than the pretrained layers "
        "(measured on 10 examples a label of Banking77's 77 labels: see the README)"))


@register
class Full(StrategyBase):
    distributed = True          # trains on torchrun's ranks (training/loop.py)
    name = "full"
    bench = "quick"
    bench_params = {"epochs": 1, "min_steps": 0, "batch_size": 32, "checkpoint_every": 1000}
    task = TEXT_CLASSIFICATION
    rank = 50
    advice = "All layers trained. The quality ceiling; the most time and memory."
    adjustable_memory = True
    lighter = ("lora", "LoRA instead of full fine-tuning (base frozen, ~1% of parameters trained)")
    reference_samples_per_s = 185.0
    summary = "Fine-tune all layers. Best quality on long or unusual texts; most compute and memory."
    Params = FullParams

    def check(self, ctx: RunContext) -> None:
        check_common(ctx)

    def estimate(self, ctx: RunContext):
        return estimate_finetune(ctx, self)

    def advise(self, facts, budget: str, cuda: bool):
        if budget == "best" and (cuda or facts.rows <= 5000):
            return 40, ("You asked for the best quality: fine-tuning adapts the model itself to your texts. "
                        "Full fine-tuning fits this size.")
        return None

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
