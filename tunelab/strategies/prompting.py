"""prompt-zero-shot and prompt-few-shot: classify by prompting a causal (instruct) LM, no training.

The label is chosen by the log-likelihood of each label's tokens as the assistant's answer
(constrained: only a label can come out), never by parsing free text, so the metrics compare
directly with the trained classifiers'. Few-shot places k stratified examples a label from the
train split in context, as earlier user/assistant turns, in a seeded shuffled order.

The LM is --model when that is a causal LM, else the `lm` hyperparameter (default: the catalog's
smollm2), so one `compare` can put prompting a bigger model next to tuning a small encoder.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from ..data import sample_per_class
from ..models import ModelNotFound, resolve_model
from ..models.causal import load_causal_lm, load_chat_tokenizer
from ..models.lm_predictors import PromptClassifier
from ..training.preflight import Estimate, current_rss_mb, inference_memory, model_dims
from ..training.progress import ProgressEvent
from .base import ConfigError, Params, RunContext, StrategyBase, register
from .classification import TEXT_CLASSIFICATION
from .zero_shot import humanize

DEFAULT_INSTRUCTION = ("Classify the text into exactly one of these labels: {labels}. "
                       "Answer with the label only.")


class PromptParams(Params):
    lm: str = Field("smollm2", description="the causal LM to prompt when --model is not one")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="system prompt; {labels} lists the labels")
    label_words: dict[str, str] = Field(default_factory=dict, description="label -> the word the LM answers")
    calibration: str = Field("batch", pattern="^(none|content-free|batch)$", description=(
        "batch: subtract the mean label scores of calibration_texts unlabelled training texts (Zhou et "
        "al. 2023); content-free: of empty/'N/A' inputs (Zhao et al. 2021). Small LMs otherwise answer "
        "one label for nearly everything"))
    calibration_texts: int = Field(48, ge=1, le=2000, description="training texts (labels unused) for batch")
    normalize: str = Field("sum", pattern="^(sum|mean)$", description="label log-likelihood: sum or per-token mean")
    max_text_tokens: int = Field(256, ge=8, description="longer texts are cut to this many tokens")


class PromptFewShotParams(PromptParams):
    k: int = Field(2, ge=1, le=64, description="examples a label placed in the prompt")


def causal_model(ctx: RunContext):
    if ctx.model.kind == "causal-lm":
        return ctx.model
    try:
        spec = resolve_model(ctx.params.lm)
    except ModelNotFound as exc:
        raise ConfigError(f"prompting needs a causal LM: {exc}") from None
    if spec.kind != "causal-lm":
        raise ConfigError(f"{spec.name} is not a causal language model; set lm= to one (e.g. smollm2)")
    return spec


class _PromptBase(StrategyBase):
    task = TEXT_CLASSIFICATION
    family = "transfer"
    in_wizard = False      # slow to serve: from the API and the CLI, next to the trained ones
    advice = "Ask a chat LM for the label: no training, strong when labels are self-explanatory; slow to serve."

    def check(self, ctx: RunContext) -> None:
        if not hasattr(ctx.splits.train, "label_names"):
            raise ConfigError(f"{self.name} classifies text+label data; this dataset has no labels")
        if len(ctx.splits.label_names) < 2:
            raise ConfigError("a classifier needs at least 2 labels")
        causal_model(ctx)
        words = self.verbalizers(ctx)
        if len(set(words.values())) < len(words):
            raise ConfigError(f"two labels share an answer word: {words}; set label_words=")

    def verbalizers(self, ctx: RunContext) -> dict[str, str]:
        return {n: ctx.params.label_words.get(n, humanize(n)) for n in ctx.splits.label_names}

    def shots(self, ctx: RunContext) -> list[tuple[str, str]]:
        return []

    def estimate(self, ctx: RunContext) -> Estimate:
        from transformers import AutoConfig

        spec = causal_model(ctx)
        config = AutoConfig.from_pretrained(str(spec.path), trust_remote_code=False)
        shots = len(ctx.splits.label_names) * getattr(ctx.params, "k", 0)
        seq = 64 + (shots + 1) * min(ctx.params.max_text_tokens, 96)
        mem = inference_memory(model_dims(config), spec.parameters, len(ctx.splits.label_names), seq, 0,
                               baseline_mb=current_rss_mb())
        # ~2 FLOPs a parameter a token, at a conservative 5 GFLOP/s on CPU; the cache serves the labels
        per_text = 2 * spec.parameters * seq / 5e9
        n = len(ctx.splits.test) + len(ctx.splits.validation)
        return Estimate(sum(mem.values()), per_text * n, mem, f"{n} prompts of ~{seq} tokens to score")

    def fit(self, ctx: RunContext) -> PromptClassifier:
        spec = causal_model(ctx)
        t0 = time.perf_counter()
        names = ctx.splits.label_names
        words = self.verbalizers(ctx)
        instruction = ctx.params.instruction.format(labels=", ".join(words[n] for n in names))
        clf = PromptClassifier(load_causal_lm(spec.path), load_chat_tokenizer(spec.path), names, spec.ref,
                               instruction=instruction, shots=self.shots(ctx), verbalizers=words,
                               calibration=ctx.params.calibration, normalize=ctx.params.normalize,
                               max_text_tokens=ctx.params.max_text_tokens, device=ctx.device, precision="no")
        rng = np.random.default_rng(ctx.seed)
        train = ctx.splits.train.texts
        sample = [train[i] for i in rng.permutation(len(train))[:ctx.params.calibration_texts]]
        clf.on_progress = lambda done, total: ctx.progress(ProgressEvent("predict", done, total,
                                                                        message=f"prompting {spec.name}"))
        clf.calibrate(sample)
        ctx.notes.update(trainable_params=0, total_params=spec.parameters, lm=spec.name,
                         shots=len(clf.shots), setup_seconds=time.perf_counter() - t0)
        return clf


@register
class PromptZeroShot(_PromptBase):
    name = "prompt-zero-shot"
    rank = 70
    summary = "Ask an instruct LM for the label (scored by log-likelihood). No training; slow to serve."
    Params = PromptParams


@register
class PromptFewShot(_PromptBase):
    name = "prompt-few-shot"
    rank = 71
    summary = "As prompt-zero-shot, with k labelled examples a class from your data in the prompt."
    Params = PromptFewShotParams

    def shots(self, ctx: RunContext) -> list[tuple[str, str]]:
        picked = sample_per_class(ctx.splits.train, ctx.params.k, seed=ctx.seed)
        examples = [(e.text, e.label) for e in picked.examples]
        order = np.random.default_rng(ctx.seed).permutation(len(examples))
        return [examples[i] for i in order]
