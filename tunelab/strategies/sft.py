"""Supervised fine-tuning of causal LMs on conversations or plain text: sft-full, sft-lora,
sft-qlora (CUDA only). The chat template renders each conversation (a documented default where
the model has none), the loss falls on the assistant's tokens only, short examples can be packed
(position ids restart per example: no attention across examples), and the shared training loop
brings gradient accumulation, checkpointing, resume and early stopping on held-out loss."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Literal

from pydantic import Field

from ..models.causal import encode_conversation, load_causal_lm, load_chat_tokenizer
from ..models.lm_predictors import CausalLMModel
from ..training.causal_lm import CausalLMTask, LMSplit
from ..training.costs import count_params
from ..hardware.efficiency import work_note
from ..training.loop import LoopConfig, train_loop
from .base import ConfigError, Params, RunContext, StrategyBase, register
from .generative import CHAT
from .lm_estimate import estimate_lm
from .lora import default_targets
from .qlora import cuda_problem



SMALL_MODEL = 50_000_000     # parameters: below, full fine-tuning is the better default


class SFTParams(Params):
    epochs: int = Field(3, ge=1, le=100)
    min_steps: int = Field(100, ge=0, description="small data: more epochs until this many steps")
    max_epochs: int = Field(20, ge=1, le=1000)
    learning_rate: float | None = Field(None, gt=0, lt=1, description=(
        "default: 1e-3 for models under 10M parameters, 5e-5 above (full); LoRA: 2e-3 / 2e-4"))
    batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    max_length: int = Field(512, ge=8, description="tokens per example (capped at the model's context)")
    packing: bool = Field(False, description="pack short examples into max_length rows")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    early_stopping_patience: int = Field(2, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    gradient_checkpointing: bool = False
    attention: str = Field("auto", pattern="^(auto|eager|sdpa)$")
    eval_answers: int = Field(32, ge=0, description="held-out answers generated for exact match / token F1")
    max_new_tokens: int = Field(128, ge=1, le=4096)
    # Every causal-LM strategy on the shared loop inherits this one field (the loop does the sharding)
    sharding: Literal["none", "fsdp"] = Field("none", description=(
        "on several processes: none (each holds the whole model) or fsdp (parameters, gradients and "
        "optimizer state split across them: for models one device cannot hold; pre-flight chooses it "
        "with --auto-fit)"))


class SFTLoraParams(SFTParams):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="default: attention and MLP projections")
    export_merged: bool = Field(False, description="also write the adapter merged into the base weights")


def check_generative(ctx: RunContext, kinds: tuple[str, ...]) -> None:
    kind = getattr(ctx.splits.train, "kind", None)
    if kind not in kinds:
        raise ConfigError(f"this strategy trains on {' or '.join(kinds)} data (conversations, alpaca, plain "
                          f"text); this dataset is {kind or 'a text+label classification file'}")
    if ctx.model.kind != "causal-lm":
        raise ConfigError(f"{ctx.model.name} is not a causal language model; use a generative model "
                          "(e.g. --model smollm2 or a folder from `tunelab models import-llama2c`)")
    if len(ctx.splits.train) == 0:
        raise ConfigError("no training examples left after the split")


def max_length_of(ctx: RunContext) -> int:
    return min(ctx.params.max_length, ctx.model.max_length)


def default_lr(ctx: RunContext, lora: bool) -> float:
    if ctx.params.learning_rate is not None:
        return ctx.params.learning_rate
    return lr_for(ctx.model.parameters, lora)


def lr_for(parameters: int | None, lora: bool) -> float:
    small = parameters and parameters < 10_000_000
    return (2e-3 if small else 2e-4) if lora else (1e-3 if small else 5e-5)


def lora_targets(ctx: RunContext) -> list[str]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    targets = ctx.params.target_modules or default_targets(ctx.model.architecture) or ["all-linear"]
    if targets == ["all-linear"]:
        return targets
    config = AutoConfig.from_pretrained(str(ctx.model.path), trust_remote_code=False)
    with torch.device("meta"):
        names = [n for n, m in AutoModelForCausalLM.from_config(config).named_modules()
                 if isinstance(m, torch.nn.Linear)]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(f"LoRA target modules {missing} do not exist in {ctx.model.name}; its linear layers "
                          f"end in: {', '.join(sorted({n.split('.')[-1] for n in names}))}")
    return targets


def encode_split(ctx: RunContext, tokenizer, dataset) -> tuple[LMSplit, int]:
    n = max_length_of(ctx)
    examples = [encode_conversation(tokenizer, c.messages, n) for c in dataset.examples]
    usable = [e for e in examples if e.trained_tokens > 0]
    return LMSplit.from_examples(usable, packed=ctx.params.packing, max_length=n), \
        sum(e.truncated for e in examples)


def fingerprint(ctx: RunContext, strategy: str) -> str:
    parts = {"strategy": strategy, "model": str(ctx.model.path), "params": ctx.params.model_dump(),
             "data": [ctx.splits.train.sha256, len(ctx.splits.train)], "seed": ctx.seed}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _SFTBase(StrategyBase):
    distributed = True          # trains on torchrun's ranks (training/loop.py)
    task = CHAT
    lora = False

    def check(self, ctx: RunContext) -> None:
        check_generative(ctx, self.task.data_kinds)
        if self.lora:
            lora_targets(ctx)

    def default_learning_rate(self, model_parameters: int) -> float:
        return lr_for(model_parameters, self.lora)

    def estimate(self, ctx: RunContext):
        tokenizer = load_chat_tokenizer(ctx.model.path)
        sample = ctx.splits.train.examples[:2000]
        lengths = [len(encode_conversation(tokenizer, c.messages, max_length_of(ctx)).input_ids) for c in sample]
        rows = len(ctx.splits.train)
        if ctx.params.packing and lengths:
            rows = max(1, round(sum(lengths) / max_length_of(ctx) * rows / len(lengths)))
        return estimate_lm(ctx, self.build_model, lengths, rows, global_batch=True)

    def build_model(self, ctx: RunContext):
        import torch

        torch.manual_seed(ctx.seed)
        attention = ctx.params.attention
        if attention == "auto":
            attention = "sdpa"
        model = load_causal_lm(ctx.model.path, attention=attention)
        model.config.use_cache = False
        if self.lora:
            from peft import LoraConfig, TaskType, get_peft_model

            p, targets = ctx.params, lora_targets(ctx)
            if p.gradient_checkpointing:
                model.enable_input_require_grads()
            config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout,
                                target_modules=targets[0] if targets == ["all-linear"] else targets)
            model = get_peft_model(model, config)
        return model

    def fit(self, ctx: RunContext) -> CausalLMModel:
        p = ctx.params
        tokenizer = load_chat_tokenizer(ctx.model.path)
        model = self.build_model(ctx)
        train, truncated = encode_split(ctx, tokenizer, ctx.splits.train)
        validation, _ = encode_split(ctx, tokenizer, ctx.splits.validation)
        if len(train) == 0:
            raise ConfigError("no training example has a trained token left after truncation; raise max_length")
        cfg = LoopConfig(epochs=p.epochs, min_steps=p.min_steps, max_epochs=p.max_epochs,
                         learning_rate=default_lr(ctx, self.lora), batch_size=p.batch_size,
                         gradient_accumulation=p.gradient_accumulation, weight_decay=p.weight_decay,
                         warmup_ratio=p.warmup_ratio, precision=ctx.precision, device=ctx.device,
                         gradient_checkpointing=p.gradient_checkpointing,
                         early_stopping_patience=p.early_stopping_patience, checkpoint_every=p.checkpoint_every,
                         seed=ctx.seed, sharding=p.sharding)
        t0 = time.perf_counter()
        result = train_loop(model, train, validation if len(validation) else None, cfg, ctx.work_dir / "checkpoints",
                            tokenizer.pad_token_id, fingerprint=fingerprint(ctx, self.name), progress=ctx.progress,
                            task=CausalLMTask(tokenizer.pad_token_id))
        seconds = time.perf_counter() - t0
        trainable, total = count_params(model)
        best = result.state.best_metric
        ctx.notes.update(resumed_from_step=result.resumed_from_step, steps=result.state.global_step,
                         tokens_processed=result.tokens_processed, history=result.history,
                         trainable_params=trainable, total_params=total, loop_seconds=seconds,
                         work=work_note(result.work.summary(), model),
                         tokens_per_second=result.tokens_processed / max(seconds, 1e-9),
                         best_val_loss=-best if best is not None else None, truncated_examples=truncated,
                         learning_rate=cfg.learning_rate, packed_rows=len(train) if p.packing else None)
        model.eval()
        return CausalLMModel(model, tokenizer, ctx.model.ref, adapter=self.lora, max_length=max_length_of(ctx),
                             device=ctx.device, precision=ctx.precision,
                             export_merged=bool(getattr(p, "export_merged", False)))


@register
class SFTFull(_SFTBase):
    name = "sft-full"
    bench = "full"
    bench_params = {"epochs": 1, "min_steps": 0, "batch_size": 8, "eval_answers": 0, "max_length": 128}
    rank = 50
    aliases = ("full",)
    in_default_compare = True
    openai_method = "supervised"       # for small models; LoRA above (method_priority)
    advice = "Every weight trained on your conversations: for small models and when quality matters most."
    summary = "Causal LM: fine-tune every weight on your conversations (loss on the assistant's tokens)."
    Params = SFTParams

    def method_priority(self, model_parameters: int) -> int:
        # a small model: every weight costs little more than adapters, and fits a chat set best
        return 30 if 0 < model_parameters <= SMALL_MODEL else 100

    def advise(self, facts, budget: str, cuda: bool):
        params = getattr(facts, "model_params", 0) or 0
        if 0 < params <= SMALL_MODEL:
            return 35, ("A small model: training every weight costs little more than LoRA adapters here, "
                        "and usually fits your conversations best.")
        if budget == "best" and facts.rows <= 300 and 0 < params <= 4 * SMALL_MODEL:
            return 35, ("Little data on a small model, and you asked for the best quality: full fine-tuning "
                        "is affordable here.")
        return None


@register
class SFTLora(_SFTBase):
    name = "sft-lora"
    bench = "full"
    bench_params = {"epochs": 1, "min_steps": 0, "batch_size": 8, "eval_answers": 0, "max_length": 128}
    rank = 40
    aliases = ("lora",)
    in_default_compare = True
    openai_method = "supervised"
    is_default = True
    advice = "Adapters on a frozen model: near full quality, little memory, a few MB to store. Right for most."
    summary = "Causal LM: LoRA adapters on attention and MLP; a few MB to store, merge on export."
    Params = SFTLoraParams
    lora = True

    def advise(self, facts, budget: str, cuda: bool):
        return 50, self.advice          # the choice for most chat data, whatever its size


@register
class SFTQLora(SFTLora):
    name = "sft-qlora"
    rank = 60
    aliases = ("qlora",)
    needs_cuda = True
    openai_method = None
    in_default_compare = False
    advice = "LoRA on a 4-bit base: the least memory for big models. Needs an NVIDIA GPU."
    summary = "Causal LM: LoRA on a 4-bit base (bitsandbytes). Needs a CUDA GPU."

    def advise(self, facts, budget: str, cuda: bool):
        if cuda and (getattr(facts, "model_params", 0) or 0) >= 1_000_000_000:
            return 45, "A large model on a GPU: QLoRA trains the same adapters on a 4-bit copy, in far less memory."
        return None

    def unavailable(self) -> str | None:
        problem = cuda_problem()
        return problem.replace("--strategy lora", "--strategy sft-lora") if problem else None

    def check(self, ctx: RunContext) -> None:
        if ctx.params.sharding != "none":
            raise ConfigError("sft-qlora's 4-bit base cannot be sharded across processes; use sft-lora with "
                              "--set sharding=fsdp, or sft-qlora without sharding")
        problem = self.unavailable()
        if problem:
            raise ConfigError(problem)
        super().check(ctx)

    def build_model(self, ctx: RunContext):
        import torch
        from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        from ..training.distributed import World     # a rank's own GPU (data-parallel jobs)

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
        torch.manual_seed(ctx.seed)
        model = AutoModelForCausalLM.from_pretrained(str(ctx.model.path), quantization_config=quant,
                                                     use_safetensors=True, trust_remote_code=False,
                                                     device_map={"": World.from_env().local_rank})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ctx.params.gradient_checkpointing)
        p, targets = ctx.params, lora_targets(ctx)
        return get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=p.r, lora_alpha=p.alpha,
                                                lora_dropout=p.dropout, target_modules=targets))
