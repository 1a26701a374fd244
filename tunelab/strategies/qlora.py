"""qlora: a 4-bit (NF4) frozen base with LoRA adapters, via bitsandbytes. CUDA only."""

from __future__ import annotations

import importlib.util

import torch

from .base import ConfigError, RunContext, StrategyBase, register
from .classification import TEXT_CLASSIFICATION
from .estimates import estimate_finetune
from .finetune import check_common, load_tokenizer_for, predictor, run_loop
from .lora import LoraParams, resolve_targets, wrap_lora


class QLoraParams(LoraParams):
    pass


def cuda_problem() -> str | None:
    if not torch.cuda.is_available():
        return ("qlora needs an NVIDIA GPU with CUDA (4-bit bitsandbytes kernels); none is available "
                "here. Use --strategy lora, which trains the same adapters on a full-precision base "
                "and runs on CPU.")
    if importlib.util.find_spec("bitsandbytes") is None:
        return "qlora needs the bitsandbytes package: pip install 'tunelab[cuda]'"
    return None


@register
class QLora(StrategyBase):
    distributed = True          # trains on torchrun's ranks (training/loop.py)
    name = "qlora"
    task = TEXT_CLASSIFICATION
    rank = 60
    advice = "LoRA on a 4-bit model: the least memory for big models. Needs an NVIDIA GPU."
    adjustable_memory = True
    needs_cuda = True
    reference_samples_per_s = 120.0
    summary = "LoRA on a 4-bit quantised base: the least memory for large models. Needs a CUDA GPU."
    Params = QLoraParams

    def unavailable(self) -> str | None:
        return cuda_problem()

    def check(self, ctx: RunContext) -> None:
        problem = cuda_problem()
        if problem:
            raise ConfigError(problem)
        check_common(ctx)
        resolve_targets(ctx)

    def estimate(self, ctx: RunContext):
        return estimate_finetune(ctx, self)

    def build(self, ctx: RunContext):
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

        from ..training.distributed import World     # a rank's own GPU (data-parallel jobs)

        names = ctx.splits.label_names
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
        torch.manual_seed(ctx.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(ctx.model.path), num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, quantization_config=quant,
            use_safetensors=True, trust_remote_code=False, device_map={"": World.from_env().local_rank})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ctx.params.gradient_checkpointing)
        return wrap_lora(ctx, model, resolve_targets(ctx))

    def fit(self, ctx: RunContext):
        model = self.build(ctx)
        tokenizer = load_tokenizer_for(ctx)
        run_loop(ctx, model, tokenizer, self.name)
        return predictor(ctx, model, tokenizer, adapter=True)
