"""few-shot: SetFit on k labelled examples a class (contrastive tuning of the encoder, then a
logistic-regression head).

SetFit's defaults build pairs for every example with every other class: 374,528 pairs for
Banking77 (a 3.6 h run on 2 cores). tunelab caps the pairs (max_pairs) so the cost is known
before the run and stays in minutes.
"""

from __future__ import annotations

import contextlib
import math
import sys

from pydantic import Field

from ..data import sample_per_class
from ..models.embeddings import encode
from ..models.predictors import EmbeddingHeadPredictor
from ..training.progress import ProgressEvent
from .advice import LOAD_SECONDS, per_class_in_train, split_rows
from .base import ConfigError, Params, RunContext, StrategyBase, register
from .classification import TEXT_CLASSIFICATION
from .estimates import estimate_transfer
from .heads import fit_logistic_head
from .linear_probe import label_ids


class FewShotParams(Params):
    k: int = Field(8, ge=1, le=1000, description="labelled examples a class")
    max_pairs: int = Field(2000, ge=16, description="contrastive pairs in total (caps the cost)")
    batch_size: int = Field(32, ge=2)
    body_learning_rate: float = Field(2e-5, gt=0, lt=1)
    epochs: int = Field(1, ge=1)
    max_length: int | None = Field(None, ge=8)


@register
class FewShot(StrategyBase):
    name = "few-shot"
    task = TEXT_CLASSIFICATION
    family = "transfer"
    rank = 20
    advice = "A few examples per label (8 by default). For when labelling is expensive."
    in_default_compare = True
    summary = "SetFit: tune the encoder on k examples a class. For when labels are scarce."
    Params = FewShotParams

    def check(self, ctx: RunContext) -> None:
        if len(ctx.splits.label_names) < 2:
            raise ConfigError("few-shot needs at least 2 labels")

    def estimate(self, ctx: RunContext):
        return estimate_transfer(ctx, len(ctx.splits.label_names), pair_texts=ctx.params.max_pairs,
                                 trains_encoder=True)

    def trainable_params(self, predictor, ctx: RunContext, measured: int) -> int:
        return int(predictor.weight.size + predictor.bias.size
                   + sum(p.numel() for p in predictor.encoder.parameters()))

    def encode_work(self, *, train, val, test, labels, cached, params) -> dict:
        return {"texts": labels * 8 + test, "pairs": int(params.get("max_pairs", 2000))}

    def advise(self, facts, budget: str, cuda: bool):
        if per_class_in_train(facts) < 30:
            return 20, ("Tens of examples per label: few-shot (SetFit) gets the most out of a small labelled "
                        "set; fine-tuning would overfit.")
        return None

    def rough_seconds(self, facts, per_text: float, scale: float, params: dict) -> float:
        return LOAD_SECONDS + int(params.get("max_pairs") or 2000) * 3 * per_text + split_rows(facts)[2] * per_text

    def fit(self, ctx: RunContext) -> EmbeddingHeadPredictor:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments

        p: FewShotParams = ctx.params
        names = ctx.splits.label_names
        shots = sample_per_class(ctx.splits.train, p.k, seed=ctx.seed)
        index = {n: i for i, n in enumerate(names)}
        data = Dataset.from_dict({"text": shots.texts, "label": [index[x] for x in shots.labels]})
        model = SetFitModel.from_pretrained(str(ctx.model.path), local_files_only=True,
                                            trust_remote_code=False, use_safetensors=True)
        if p.max_length:
            model.model_body.max_seq_length = p.max_length
        # SetFit draws num_iterations positive and negative pairs per example.
        iterations = max(1, p.max_pairs // (2 * len(shots)))
        args = TrainingArguments(output_dir=str(ctx.work_dir / "setfit"), batch_size=p.batch_size,
                                 num_epochs=p.epochs, num_iterations=iterations,
                                 max_steps=math.ceil(p.max_pairs / p.batch_size),
                                 body_learning_rate=p.body_learning_rate, seed=ctx.seed,
                                 report_to="none", save_strategy="no", show_progress_bar=False)
        ctx.progress(ProgressEvent("train", 0, 1, message=f"SetFit on {len(shots)} examples, "
                                   f"{p.max_pairs} pairs"))
        # SetFit's Trainer prints its log dicts on stdout: keep stdout for results (compare --json).
        with contextlib.redirect_stdout(sys.stderr):
            Trainer(model=model, args=args, train_dataset=data).train()
        ctx.progress(ProgressEvent("train", 1, 1))
        weight, bias, c = self.head(ctx, model.model_body, shots)
        ctx.notes.update(examples_used=len(shots), pairs=p.max_pairs, C=c)
        return EmbeddingHeadPredictor(model.model_body, weight, bias, names, ctx.model.ref,
                                      body_saved=True, precision=ctx.precision)

    def head(self, ctx: RunContext, body, shots):
        """The logistic head on the tuned body's embeddings, its C chosen on the validation split
        (SetFit's own head is fixed at C=1: on Banking77's 77 classes that costs ~0.02 macro-F1)."""
        names = ctx.splits.label_names
        x = encode(body, shots.texts, precision=ctx.precision)
        val = ctx.splits.validation
        x_val = encode(body, val.texts, precision=ctx.precision) if len(val) else None
        return fit_logistic_head(x, label_ids(shots.labels, names), len(names), x_val,
                                 label_ids(val.labels, names) if len(val) else None)
