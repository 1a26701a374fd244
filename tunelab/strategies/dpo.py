"""dpo: Direct Preference Optimization on prompt/chosen/rejected pairs with the TRL library,
LoRA by default (the reference model is then the base with the adapter switched off: no copy).

Evaluated on held-out pairs by the chosen-minus-rejected log-probability margin (and how often
it is positive), for the base model and the tuned one.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from ..data.generative import Message
from ..evaluation.generative import answer_metrics
from ..evaluation.intervals import WILSON, interval_info, wilson_interval
from ..hardware.efficiency import model_flops, work_note
from ..hardware.flops import flop_model_for
from ..models.causal import IGNORE, encode_conversation, load_causal_lm, load_chat_tokenizer
from ..models.device import autocast
from ..models.generation import GenerationSettings, generate_text
from ..models.lm_predictors import CausalLMModel
from ..training.costs import count_params
from ..training.progress import ProgressEvent
from .base import ConfigError, Params, RunContext, StrategyBase, register
from .generative import GenerativeTask
from .task import TASKS
from .lm_estimate import estimate_lm
from .sft import check_generative, fingerprint, lora_targets
from .trainer_resume import checkpoint_folder, last_checkpoint, raise_if_stopped, stop_callback

SAMPLES = 4


class DPOParams(Params):
    beta: float = Field(0.1, gt=0, le=10, description="strength of the pull away from the reference model")
    loss_type: str = Field("sigmoid", pattern="^(sigmoid|ipo|hinge)$")
    epochs: int = Field(1, ge=1, le=100)
    learning_rate: float | None = Field(None, gt=0, lt=1, description="default: 5e-3 under 10M parameters, 5e-5 above")
    batch_size: int = Field(4, ge=1, le=1024)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    max_length: int = Field(256, ge=16, description="prompt + answer tokens (the prompt is cut from the left)")
    lora: bool = Field(True, description="train LoRA adapters (False: every weight, with a reference copy)")
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = None
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints (resume mid-epoch)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1)


def _turns(pair, answer: str | None = None) -> list[Message]:
    """The pair's prompt (earlier answers not trained) plus, when given, the answer to score."""
    turns = [Message(m.role, m.content, train=False) for m in pair.prompt]
    return turns + ([Message("assistant", answer)] if answer is not None else [])


@torch.inference_mode()
def answer_logprob(model, tokenizer, pair, answer: str, max_length: int, device: str, precision: str) -> float:
    e = encode_conversation(tokenizer, _turns(pair, answer), 10**9)
    ids, labels = e.input_ids, e.labels
    if len(ids) > max_length:                        # keep the answer, cut the prompt from the left
        ids, labels = ids[-max_length:], labels[-max_length:]
    with autocast(device, precision):
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    target = torch.tensor(labels[1:], device=device)
    keep = target != IGNORE
    return float(logp[keep].gather(1, target[keep].unsqueeze(1)).sum())


def margins(model, tokenizer, pairs, max_length: int, device: str, precision: str) -> np.ndarray:
    model.eval()
    return np.array([answer_logprob(model, tokenizer, p, p.chosen, max_length, device, precision)
                     - answer_logprob(model, tokenizer, p, p.rejected, max_length, device, precision)
                     for p in pairs])


def _dataset(pairs):
    from datasets import Dataset

    def convo(messages):
        return [{"role": m.role, "content": m.content} for m in messages]
    return Dataset.from_list([{"prompt": convo(p.prompt), "chosen": [{"role": "assistant", "content": p.chosen}],
                               "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])


def _progress_callback(ctx: RunContext):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            ctx.progress(ProgressEvent("train", state.global_step, state.max_steps, epoch=state.epoch or 0.0,
                                       loss=logs.get("loss"), message=f"margin {logs.get('rewards/margins', 0):.3f}"))
    return Progress()


def _release_accelerate_state() -> None:
    """The Trainer leaves accelerate's process-wide state in its precision; later runs in this
    process (the shared loop) then start clean."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class Preference(GenerativeTask):
    """Preference tuning: prompt/chosen/rejected pairs in, ranked by how often the tuned model
    prefers the chosen answer on held-out pairs."""
    name = "preference"
    title = "preference tuning"
    data_kinds = ("preference",)
    quality = "preference_accuracy"
    quality_label = "preference accuracy"
    material = 0.05
    columns = (("margin", "margin", "{:.3f}"), ("base_margin", "base margin", "{:.3f}"),
               ("preference_accuracy", "pref. acc", "{:.3f}"), ("train_seconds", "train s", "{:.1f}"),
               ("trainable_params", "trainable", "{:,}"), ("relative_cost", "rel. cost", "{:.1f}"))

    def evaluate(self, lm, ctx, progress) -> tuple[dict, list[dict]]:
        return evaluate_pairs(lm, ctx, progress)


PREFERENCE = TASKS[Preference.name]


@register
class DPO(StrategyBase):
    distributed = True          # TRL's Trainer trains on torchrun's ranks itself
    name = "dpo"
    task = PREFERENCE
    rank = 40
    openai_method = "dpo"
    is_default = True
    in_default_compare = True
    advice = "Teach the model which of two answers you prefer (DPO on LoRA adapters)."
    summary = "Preference tuning (DPO, TRL) on prompt/chosen/rejected pairs; LoRA by default."
    Params = DPOParams

    def check(self, ctx: RunContext) -> None:
        check_generative(ctx, self.task.data_kinds)
        if ctx.params.lora:
            lora_targets(ctx)

    def _lr(self, ctx: RunContext) -> float:
        if ctx.params.learning_rate is not None:
            return ctx.params.learning_rate
        return self.default_learning_rate(ctx.model.parameters)

    def default_learning_rate(self, model_parameters: int) -> float:
        return 5e-3 if model_parameters and model_parameters < 10_000_000 else 5e-5

    def build_model(self, ctx: RunContext):
        torch.manual_seed(ctx.seed)
        model = load_causal_lm(ctx.model.path, attention="sdpa")
        model.config.use_cache = False
        if ctx.params.lora:
            from peft import LoraConfig, TaskType, get_peft_model

            p, targets = ctx.params, lora_targets(ctx)
            model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=p.r, lora_alpha=p.alpha,
                                                     lora_dropout=p.dropout,
                                                     target_modules=targets[0] if targets == ["all-linear"] else targets))
        return model

    def estimate(self, ctx: RunContext):
        tokenizer = load_chat_tokenizer(ctx.model.path)
        pairs = ctx.splits.train.examples[:500]
        lengths = [min(len(encode_conversation(tokenizer, _turns(p, max(p.chosen, p.rejected, key=len)), 10**9)
                           .input_ids), ctx.params.max_length) for p in pairs]
        # chosen and rejected, through the policy (and the reference: forward only)
        return estimate_lm(ctx, self.build_model, lengths, len(ctx.splits.train), copies=2)

    def fit(self, ctx: RunContext) -> CausalLMModel:
        from trl import DPOConfig, DPOTrainer

        p = ctx.params
        tokenizer = load_chat_tokenizer(ctx.model.path)
        model = self.build_model(ctx)
        reference = None if p.lora else load_causal_lm(ctx.model.path, attention="sdpa")
        train = _dataset(ctx.splits.train.examples)
        if len(train) == 0:
            raise ConfigError("no preference pairs left for training after the split")
        bf16 = ctx.precision == "bf16"
        folder = checkpoint_folder(ctx, "dpo", fingerprint(ctx, self.name))
        args = DPOConfig(output_dir=str(folder), per_device_train_batch_size=p.batch_size,
                         gradient_accumulation_steps=p.gradient_accumulation, learning_rate=self._lr(ctx),
                         num_train_epochs=p.epochs, beta=p.beta, loss_type=[p.loss_type], max_length=p.max_length,
                         truncation_mode="keep_end", warmup_steps=p.warmup_ratio, lr_scheduler_type="linear",
                         logging_steps=1, save_strategy="steps", save_steps=p.checkpoint_every, save_total_limit=1,
                         report_to="none", seed=ctx.seed,
                         use_cpu=ctx.device == "cpu", bf16=bf16, gradient_checkpointing=p.gradient_checkpointing,
                         disable_tqdm=True, dataloader_num_workers=0)
        trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=train,
                             processing_class=tokenizer, callbacks=[_progress_callback(ctx), stop_callback(ctx)])
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)      # our progress events instead of printed dicts
        resume = last_checkpoint(folder)
        resumed = int(resume.rsplit("-", 1)[-1]) if resume else 0
        if resume:
            ctx.progress(ProgressEvent("train", resumed, 0, message=f"resuming from checkpoint at step {resumed}"))
        t0 = time.perf_counter()
        out = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - t0
        raise_if_stopped(out.global_step)
        model = trainer.model
        model.eval()
        _release_accelerate_state()
        trainable, total = count_params(model)
        tokens = int(max((h.get("num_tokens", 0) for h in trainer.state.log_history), default=0))
        ctx.notes.update(resumed_from_step=resumed, steps=out.global_step, train_loss=out.training_loss, trainable_params=trainable,
                         total_params=total, loop_seconds=seconds, learning_rate=self._lr(ctx),
                         tokens_processed=tokens, tokens_per_second=tokens / seconds if tokens else None,
                         work=_work(model, tokens, out.global_step * p.batch_size * p.gradient_accumulation, seconds),
                         history=[{k: v for k, v in h.items() if isinstance(v, (int, float))}
                                  for h in trainer.state.log_history])
        return CausalLMModel(model, tokenizer, ctx.model.ref, adapter=p.lora, max_length=p.max_length,
                             device=ctx.device, precision=ctx.precision)


def _work(model, tokens: int, pairs: int, seconds: float) -> dict:
    """TRL counts tokens, not lengths: each pair is two sequences (chosen, rejected) of about equal
    length, and the frozen reference scores both once more (its forward is added as policy work:
    same model, same shapes). The whole trainer time is the step time."""
    rows = 2 * pairs
    summary = {"phase": "training", "rows": rows, "tokens": tokens,
               "tokens_sq": int(tokens * tokens / rows) if rows else 0, "seconds": seconds,
               "steps": 0, "step_p50_s": None, "step_p95_s": None}
    note = work_note(summary, model)
    if note["model_flops"]:
        note["model_flops"] += model_flops(summary, flop_model_for(model), "forward")
    return note


def _answers(lm: CausalLMModel, pairs) -> list[str]:
    settings = GenerationSettings(max_new_tokens=48)
    return [generate_text(lm.model, lm.tokenizer, lm.prompt_ids([{"role": m.role, "content": m.content}
                                                                  for m in p.prompt]), settings, lm.device)
            for p in pairs]


def evaluate_pairs(lm: CausalLMModel, ctx: RunContext, progress) -> tuple[dict, list[dict]]:
    """Margins on held-out pairs, tuned vs base (the adapter off, or a fresh copy of the base)."""
    pairs = ctx.splits.test.examples
    n = ctx.params.max_length
    tuned = margins(lm.model, lm.tokenizer, pairs, n, lm.device, lm.precision)
    progress(ProgressEvent("eval", 1, 2, message="tuned margins"))
    if lm.adapter:
        with lm.model.disable_adapter():
            base = margins(lm.model, lm.tokenizer, pairs, n, lm.device, lm.precision)
            base_answers = _answers(lm, pairs[:SAMPLES])
    else:
        base_lm = CausalLMModel(load_causal_lm(ctx.model.path), lm.tokenizer, lm.base_model)
        base = margins(base_lm.model, lm.tokenizer, pairs, n, lm.device, lm.precision)
        base_answers = _answers(base_lm, pairs[:SAMPLES])
    progress(ProgressEvent("eval", 2, 2, message="base margins"))
    tuned_answers = _answers(lm, pairs[:SAMPLES])
    metrics = {"test_rows": len(pairs), "margin": float(tuned.mean()) if len(pairs) else None,
               "base_margin": float(base.mean()) if len(pairs) else None,
               "preference_accuracy": float((tuned > 0).mean()) if len(pairs) else None,
               "base_preference_accuracy": float((base > 0).mean()) if len(pairs) else None,
               **answer_metrics(tuned_answers, [p.chosen for p in pairs[:SAMPLES]]),
               **preference_intervals(tuned, base)}
    samples = [{"prompt": p.prompt[-1].content, "reference": p.chosen, "base": b, "tuned": t}
               for p, b, t in zip(pairs[:SAMPLES], base_answers, tuned_answers)]
    return metrics, samples


def preference_intervals(tuned: np.ndarray, base: np.ndarray) -> dict:
    """95% Wilson intervals of how often the tuned (and the base) model prefers the chosen answer
    over the held-out pairs (None without pairs). The sample answers' token F1 and exact match
    (a handful of pairs) keep their own intervals from answer_metrics."""
    return {"preference_accuracy_interval": wilson_interval(int((tuned > 0).sum()), len(tuned)),
            "base_preference_accuracy_interval": wilson_interval(int((base > 0).sum()), len(base)),
            "interval": interval_info(len(tuned), method=WILSON)}
