"""The library entry point for generative data: conversations / plain text / preference pairs ->
tuned causal LM -> held-out loss, perplexity, exact match, token F1 -> a model folder whose card
shows sample prompts answered by the base and the tuned model.

Same shape as `runner.run_strategy` (pre-flight, resource meter, artifact, RunResult), so the
CLI and the service's jobs can call either by the data they are given.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .artifacts import write_artifact
from .artifacts.model_card import render_generative_card
from .data import DataError
from .data.generative import GenerativeDataset, GenerativeSplits, read_generative, split_generative
from .data.generative_checks import validate_generative
from .evaluation.generative import answer_metrics, mean_token_loss, perplexity
from .models import ModelSpec
from .models.causal import conversation_token_counter, encode_conversation, load_causal_lm, load_chat_tokenizer
from .models.generation import GenerationSettings, generate_text
from .planning import preflight
from .runner import RunResult, make_context
from .training.costs import ResourceMeter
from .training.progress import ProgressEvent, ProgressFn, null_progress

# `--strategy full/lora/qlora` on generative data means the causal-LM versions.
ALIASES = {"full": "sft-full", "lora": "sft-lora", "qlora": "sft-qlora"}
SAMPLE_PROMPTS = 4


@dataclass
class GenerativeDataSpec:
    train_file: Path
    test_file: Path | None = None
    limit: int | None = None
    seed: int = 0
    plain: bool = False            # a .txt file is plain text for continued pre-training


@dataclass
class PreparedGenerative:
    splits: GenerativeSplits
    report: dict
    spec: GenerativeDataSpec


def strategy_name(name: str) -> str:
    return ALIASES.get(name, name)


def prepare_generative(spec: GenerativeDataSpec, model: ModelSpec, max_length: int | None = None) -> PreparedGenerative:
    """Read, check (errors raise DataError with their lines) and split."""
    train = read_generative(spec.train_file, plain=spec.plain)
    test = read_generative(spec.test_file, plain=spec.plain) if spec.test_file else None
    counter = conversation_token_counter(load_chat_tokenizer(model.path)) if model.kind == "causal-lm" else None
    context = min(max_length or model.max_length, model.max_length)
    report = validate_generative(train, max_length=context, count_tokens=counter)
    if not report.ok:
        raise DataError(report.errors)
    if test is not None and test.kind != train.kind:
        raise DataError(validate_generative(GenerativeDataset(test.kind, test.format)).errors or [
            _kind_mismatch(train, test)])
    if spec.limit and spec.limit < len(train):
        train = train.subset(range(spec.limit))
    return PreparedGenerative(split_generative(train, seed=spec.seed, test=test), report.to_dict(), spec)


def _kind_mismatch(train: GenerativeDataset, test: GenerativeDataset):
    from .data import Issue

    return Issue("error", "unknown_format", f"the test file holds {test.kind} data, the training file {train.kind}.",
                 "Give a test file of the same kind as the training file.", file="test")


def _references(splits: GenerativeSplits, n: int) -> list[tuple[list, str]]:
    """(prompt messages, reference answer) for the first n test conversations that end with an answer."""
    out = []
    for c in splits.test.examples:
        if c.messages[-1].role == "assistant" and len(c.messages) > 1:
            out.append((c.messages[:-1], c.messages[-1].content))
        if len(out) >= n:
            break
    return out


def _answers(lm, prompts: list[tuple[list, str]], max_new_tokens: int, progress: ProgressFn, label: str) -> list[str]:
    """Greedy answers, each allowed the reference's length plus 16 tokens (up to max_new_tokens)."""
    out = []
    for i, (messages, reference) in enumerate(prompts):
        ids = lm.prompt_ids([{"role": m.role, "content": m.content} for m in messages])
        limit = min(max_new_tokens, len(lm.tokenizer(reference)["input_ids"]) + 16)
        out.append(generate_text(lm.model, lm.tokenizer, ids, GenerationSettings(max_new_tokens=limit), lm.device))
        progress(ProgressEvent("eval", i + 1, len(prompts), message=label))
    return out


def evaluate_generative(lm, ctx, splits: GenerativeSplits, progress: ProgressFn) -> tuple[dict, list[dict]]:
    """Held-out loss/perplexity for the base and the tuned model, answer metrics, sample answers."""
    p = ctx.params
    n = min(getattr(p, "max_length", 512), ctx.model.max_length)
    rows = [e for e in (encode_conversation(lm.tokenizer, c.messages, n) for c in splits.test.examples)
            if e.trained_tokens]
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in rows]
    pad = lm.tokenizer.pad_token_id
    metrics: dict = {"test_rows": len(splits.test)}
    if rows:
        loss = mean_token_loss(lm.model, rows, pad, lm.device, lm.precision)
        metrics.update(test_loss=loss, test_perplexity=perplexity(loss))
    prompts = _references(splits, getattr(p, "eval_answers", 32))
    tuned = _answers(lm, prompts, getattr(p, "max_new_tokens", 128), progress, "tuned answers")
    metrics.update(answer_metrics(tuned, [r for _, r in prompts]))
    # The base model, for comparison: the adapter switched off, or a fresh copy of the base weights.
    base_lm = _base_of(lm, ctx)
    with _adapter_off(lm):
        if rows:
            base_loss = mean_token_loss(base_lm.model, rows, pad, lm.device, lm.precision)
            metrics.update(base_test_loss=base_loss, base_test_perplexity=perplexity(base_loss))
        base = _answers(base_lm, prompts[:SAMPLE_PROMPTS], getattr(p, "max_new_tokens", 128), progress, "base answers")
    base_scores = answer_metrics(base, [r for _, r in prompts[:SAMPLE_PROMPTS]])
    metrics["base_exact_match_on_samples"] = base_scores.get("exact_match")
    samples = [{"prompt": m[-1].content, "reference": r, "base": b, "tuned": t}
               for (m, r), b, t in zip(prompts[:SAMPLE_PROMPTS], base, tuned)]
    return metrics, samples


class _adapter_off:
    def __init__(self, lm):
        self.lm = lm
        self.cm = lm.model.disable_adapter() if lm.adapter else None

    def __enter__(self):
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *exc):
        if self.cm is not None:
            self.cm.__exit__(*exc)


def _base_of(lm, ctx):
    if lm.adapter:
        return lm
    from .models.lm_predictors import CausalLMModel

    return CausalLMModel(load_causal_lm(ctx.model.path), lm.tokenizer, lm.base_model, device=lm.device,
                         precision=lm.precision)


def run_generative(model: ModelSpec, data: PreparedGenerative, strategy: str, params=None, *,
                   out: Path | None = None, work_dir: Path | None = None, auto_fit: bool = False,
                   progress: ProgressFn = null_progress) -> RunResult:
    name = strategy_name(strategy)
    work = Path(work_dir or out or tempfile.mkdtemp(prefix=f"tunelab-{name}-"))
    strat, ctx = make_context(model, data, name, params, work_dir=work, progress=progress, seed=data.spec.seed)
    plan, ctx, strat = preflight(ctx, strat, auto_fit=auto_fit)
    with ResourceMeter() as meter:
        lm = strat.fit(ctx)
    cost = meter.record
    if hasattr(strat, "evaluate"):
        metrics, samples = strat.evaluate(lm, ctx, progress)
    else:
        metrics, samples = evaluate_generative(lm, ctx, data.splits, progress)
    notes = ctx.notes
    metrics.update(strategy=strat.name, train_seconds=cost.wall_seconds, cpu_seconds=cost.cpu_seconds,
                   gpu_seconds=cost.gpu_seconds, peak_rss_mb=cost.peak_rss_mb, peak_gpu_mb=cost.peak_gpu_mb,
                   trainable_params=int(notes.get("trainable_params", 0)),
                   total_params=int(notes.get("total_params", model.parameters)),
                   tokens_processed=int(notes.get("tokens_processed", 0)),
                   tokens_per_second=notes.get("tokens_per_second"),
                   predicted_peak_mb=plan.estimate.peak_mb, predicted_seconds=plan.estimate.seconds)
    if out is not None:
        s = data.splits
        config = {"strategy": strat.name, "model": model.to_dict() | {"ref": model.ref},
                  "params": ctx.params.model_dump(), "seed": ctx.seed, "device": ctx.device,
                  "precision": ctx.precision, "labels": [], "max_length": getattr(ctx.params, "max_length", None),
                  "plan": plan.to_dict(), "notes": {k: v for k, v in notes.items() if k != "history"},
                  "history": notes.get("history", []),
                  "data": {"train_file": Path(data.spec.train_file).name, "train_sha256": s.train.sha256,
                           "format": s.train.format, "kind": s.train.kind,
                           "test_file": Path(data.spec.test_file).name if data.spec.test_file else None,
                           "train_rows": len(s.train), "validation_rows": len(s.validation),
                           "test_rows": len(s.test), "test_origin": s.test_origin}}
        card = render_generative_card(config, metrics, data.report, samples)
        write_artifact(Path(out), lm, config=config, metrics={**metrics, "samples": samples},
                       data_report=data.report, card=card)
        shutil.rmtree(Path(work) / "checkpoints", ignore_errors=True)
    return RunResult(strat.name, metrics, plan, out, notes)
