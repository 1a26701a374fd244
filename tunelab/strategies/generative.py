"""The generative tasks' shared half: conversations, plain text or preference pairs in (read,
checked with line numbers, split), a causal LM out, its model card with base-vs-tuned sample
answers; and the chat task itself (supervised tuning), ranked by token F1 of held-out answers."""

from __future__ import annotations

import json
from pathlib import Path

from ..artifacts.model_card import render_generative_card
from ..data import DataError, Issue
from ..data.generative import GenerativeDataset, GenerativeSplits, read_generative, split_generative
from ..data.generative_checks import validate_generative
from ..evaluation.generative import answer_metrics, mean_token_loss, perplexity
from ..evaluation.intervals import format_short, interval_info
from ..models.causal import conversation_token_counter, encode_conversation, load_causal_lm, load_chat_tokenizer
from ..models.generation import GenerationSettings, generate_text
from ..training.progress import ProgressEvent, ProgressFn
from .task import TASKS, DataSpec, PreparedData, Task

SAMPLE_PROMPTS = 4
PLAIN_SUFFIXES = (".txt", ".md", ".text")
JSON_LINES = (".jsonl", ".ndjson")


def read_kind(path: Path) -> str | None:
    """The generative kind of a file (chat, plain, preference) from its content; None for a table
    of texts and labels (the name's suffix is a hint, as for the readers)."""
    from ..data.generative import KIND_OF, detect_format, sniff_file

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PLAIN_SUFFIXES:
        # a fastText or tab/pipe-separated label file named .txt is a table, prose is plain text
        return None if _is_table(path) else "plain"
    fmt = sniff_file(path)
    if fmt is None and suffix in JSON_LINES:
        # one broken line hides what the file is: the first record decides, so that a broken chat
        # file is reported by the chat reader, with its lines
        fmt = detect_format(_first_record(path))
    return KIND_OF.get(fmt) if fmt else None


def _first_record(path: Path):
    try:
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    return json.loads(raw.decode("utf-8-sig"))
    except (OSError, ValueError, RecursionError):     # RecursionError: JSON nested thousands deep
        return None
    return None


def _is_table(path: Path) -> bool:
    """fastText (`__label__x text`) or a table split by tabs or pipes (prose with commas is not a CSV)."""
    from ..data.readers import parse_file

    try:
        parsed = parse_file(path)
    except (DataError, ValueError):
        return False
    return parsed.dataset.format == "fasttext" or any(d in (parsed.detail or "") for d in ("tab", "pipe"))


class GenerativeTask(Task):
    quality_label = "token F1"
    material = 0.02
    serving = "generate"
    default_model = "smollm2"
    model_kind = "causal-lm"

    def prepare(self, spec: DataSpec, model, max_length: int | None = None) -> PreparedData:
        plain = Path(spec.train_file).suffix.lower() in PLAIN_SUFFIXES
        train = read_generative(spec.train_file, plain=plain)
        test = read_generative(spec.test_file, plain=plain) if spec.test_file else None
        counter = conversation_token_counter(load_chat_tokenizer(model.path)) if model.kind == "causal-lm" else None
        context = min(max_length or model.max_length, model.max_length)
        report = validate_generative(train, max_length=context, count_tokens=counter)
        if not report.ok:
            raise DataError(report.errors)
        if test is not None and test.kind != train.kind:
            raise DataError(validate_generative(GenerativeDataset(test.kind, test.format)).errors or [
                Issue("error", "unknown_format", f"the test file holds {test.kind} data, the training file "
                      f"{train.kind}.", "Give a test file of the same kind as the training file.", file="test")])
        if spec.limit and spec.limit < len(train):
            train = train.subset(range(spec.limit))
        return PreparedData(split_generative(train, seed=spec.seed, test=test), report.to_dict(), spec,
                            self.for_kind(train.kind))

    def for_kind(self, kind: str) -> Task:
        return next(t for t in TASKS.values() if kind in t.data_kinds)

    def data_config(self, data: PreparedData) -> dict:
        s = data.splits
        return {"train_file": Path(data.spec.train_file).name, "train_sha256": s.train.sha256,
                "format": s.train.format, "kind": s.train.kind,
                "test_file": Path(data.spec.test_file).name if data.spec.test_file else None,
                "train_rows": len(s.train), "validation_rows": len(s.validation), "test_rows": len(s.test),
                "test_origin": s.test_origin}

    def card(self, config: dict, metrics: dict, report: dict, samples: list[dict]) -> str | None:
        return render_generative_card(config, metrics, report, samples)

    columns = (("test_loss", "test loss", "{:.3f}"), ("base_test_loss", "base loss", "{:.3f}"),
               ("token_f1", "tok F1", "{:.3f}"), ("train_seconds", "train s", "{:.1f}"),
               ("tokens_per_second", "tokens/s", "{:.0f}"), ("peak_rss_mb", "peak MB", "{:.0f}"),
               ("trainable_params", "trainable", "{:,}"), ("relative_cost", "rel. cost", "{:.1f}"))

    def headline(self, strategy: str, metrics: dict) -> str:
        m = metrics
        parts = [f"{k.replace('_', ' ')} {_with_interval(m, k)}" for k in (
                 "test_loss", "base_test_loss", "test_perplexity", "exact_match", "token_f1", "margin", "base_margin",
                 "preference_accuracy") if m.get(k) is not None]
        brackets = " (95% intervals in brackets)" if any(m.get(f"{k}_interval") for k in INTERVALS) else ""
        return (f"{strategy}: {', '.join(parts)} on {m.get('test_rows')} held-out examples{brackets}; trained in "
                f"{m['train_seconds']:.1f}s ({m.get('tokens_per_second') or 0:.0f} tokens/s, peak "
                f"{m['peak_rss_mb']:.0f} MB)")

    def summarize(self, strategy: str, metrics: dict) -> dict:
        keep = ("test_loss", "base_test_loss", "test_perplexity", "exact_match", "token_f1", "margin",
                "base_margin", "preference_accuracy", "base_preference_accuracy", "train_seconds",
                "tokens_per_second", "trainable_params", "peak_rss_mb", "test_rows", "answers_scored",
                "token_f1_interval", "preference_accuracy_interval")
        row = {"strategy": strategy, **{k: metrics.get(k) for k in keep if k in metrics}}
        row["quality"] = metrics.get(self.quality) or 0.0
        row["quality_interval"] = metrics.get(f"{self.quality}_interval")
        row["cost_seconds"] = metrics["train_seconds"]
        return row


INTERVALS = ("exact_match", "token_f1", "preference_accuracy")


def _with_interval(m: dict, key: str) -> str:
    """A headline's number: 4 significant digits, or 3 decimals and its interval when it has one."""
    interval = m.get(f"{key}_interval")
    return format_short(m[key], interval) if interval else f"{m[key]:.4g}"


class Chat(GenerativeTask):
    name = "chat"
    title = "chat and instruction tuning"
    data_kinds = ("chat", "plain")
    quality = "token_f1"

    def evaluate(self, lm, ctx, progress: ProgressFn) -> tuple[dict, list[dict]]:
        return evaluate_answers(lm, ctx, ctx.splits, progress)


CHAT = TASKS[Chat.name]


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


def evaluate_answers(lm, ctx, splits: GenerativeSplits, progress: ProgressFn) -> tuple[dict, list[dict]]:
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
    metrics.setdefault("token_f1_interval", None)        # no held-out answer: no interval
    metrics["interval"] = interval_info(metrics.get("answers_scored", 0))
    # The base model, for comparison: the adapter switched off, or a fresh copy of the base weights.
    base_lm = _base_of(lm, ctx)
    with _AdapterOff(lm):
        if rows:
            base_loss = mean_token_loss(base_lm.model, rows, pad, lm.device, lm.precision)
            metrics.update(base_test_loss=base_loss, base_test_perplexity=perplexity(base_loss))
        base = _answers(base_lm, prompts[:SAMPLE_PROMPTS], getattr(p, "max_new_tokens", 128), progress, "base answers")
    base_scores = answer_metrics(base, [r for _, r in prompts[:SAMPLE_PROMPTS]])
    metrics["base_exact_match_on_samples"] = base_scores.get("exact_match")
    samples = [{"prompt": m[-1].content, "reference": r, "base": b, "tuned": t}
               for (m, r), b, t in zip(prompts[:SAMPLE_PROMPTS], base, tuned)]
    return metrics, samples


class _AdapterOff:
    def __init__(self, lm):
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
    from ..models.lm_predictors import CausalLMModel

    return CausalLMModel(load_causal_lm(ctx.model.path), lm.tokenizer, lm.base_model, device=lm.device,
                         precision=lm.precision)
