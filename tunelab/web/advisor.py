"""The wizard's advisor: transfer learning against fine-tuning in plain words, one recommendation
from the dataset's facts (size and labels for a classification table; conversations, turns and
token lengths for chat or preference data), the model and the budget, and a rough time for each
strategy. The recommendation is the strategies' own (`Strategy.advise`): nothing here names one.

Times are rough on purpose (no model is loaded to compute them): rates measured on the shared
data on a 2-core CPU with MiniLM, scaled by model size and text length, and replaced by the
tenant's own past runs of the same strategy when there are some. The job's pre-flight check
measures the real run before any work and refuses what would not fit.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from ..strategies import get_strategy, strategies_of, task_named

TRANSFER = ("It keeps the model as it is and reuses what it already knows. "
            "Zero-shot compares each text with the label names and trains nothing; few-shot tunes on a "
            "handful of examples per label; a linear probe trains one small layer on top of the frozen "
            "model. Fast and cheap, and strong on short texts and clear labels.")
FINETUNE = ("It changes the model's own weights on your examples. Full fine-tuning updates every "
            "layer: the best quality on long or unusual texts, and the most compute. LoRA trains small "
            "add-on adapters instead: close to the same quality with far less memory and tiny model files. "
            "QLoRA does LoRA on a 4-bit copy of the model, for large models on a GPU.")
IMAGE_TRANSFER = ("It keeps the pretrained network as it is and reuses the features it already computes. "
                  "Few-shot takes the mean features of each class and picks the nearest; a linear probe trains "
                  "one small layer on top of the frozen network. Fast and cheap, and strong when your images "
                  "look like the ones the network was trained on.")
IMAGE_FINETUNE = ("It changes the network's own weights on your images (flips and crops vary them as it "
                  "trains). Full fine-tuning updates every layer: the best quality on images unlike the "
                  "pretraining (scans, inspection photos), and the most compute. Partial unfreezing trains "
                  "only the last blocks and the head: most of the gain for less time and memory.")
FULL_VS_ADAPTERS = ("Full fine-tuning (sft-full) updates every weight of the language model on your "
                    "conversations: the most faithful, the most memory and the largest files; the right "
                    "call for small models and small data. LoRA (sft-lora) trains small adapters on a "
                    "frozen model: close to the same quality for a fraction of the memory, a few MB to "
                    "store. QLoRA (sft-qlora) does LoRA on a 4-bit copy of the model, for large models on "
                    "an NVIDIA GPU.")
PREFERENCE = ("Preference tuning (DPO) teaches the model which of two answers you prefer, from prompt / "
              "chosen / rejected pairs, with no separate reward model. It nudges a model that already "
              "answers in the right format: tune it on example conversations first if it does not.")
GENERATIVE_LOSS = ("Chat models are scored on held-out conversations: the loss (lower is better) and "
                   "perplexity of the reference answers, exact match and token F1 of generated answers, "
                   "base model against tuned.")
BUDGETS = {"fast": "as fast and cheap as possible", "balanced": "balanced", "best": "the best quality"}

# Measured with MiniLM (22.7M parameters) on ~16-token texts, 2-core CPU (README's benchmark notes);
# each strategy scales these in its own rough_seconds.
ENCODE_TEXTS_PER_S = 400.0
REF_PARAMS, REF_TOKENS = 22.7e6, 16.0
GENERATIVE_TOKENS = 256.0          # a conversation's length when the upload did not count tokens


def explanation(task: str) -> list[tuple[str, str]]:
    """The wizard's "which kind of training" panel for a task: (title, text) paragraphs."""
    if getattr(task_named(task), "inputs", "text") == "image":
        return [("Transfer learning.", IMAGE_TRANSFER), ("Fine-tuning.", IMAGE_FINETUNE)]
    if task_named(task).serving == "classify":
        return [("Transfer learning.", TRANSFER), ("Fine-tuning.", FINETUNE)]
    if task_named(task).data_kinds == ("preference",):
        return [("Preference tuning.", PREFERENCE)]
    return [("Full fine-tuning or adapters?", FULL_VS_ADAPTERS), ("How it is scored.", GENERATIVE_LOSS)]


@dataclass
class DataFacts:
    rows: int
    labels: int
    smallest_class: int
    mean_tokens: float
    p95_tokens: int
    task: str = "text-classification"
    kind: str | None = None           # chat | plain | preference (generative data)
    turns: float | None = None        # messages per conversation, on average (chat)
    max_tokens: int | None = None
    measured: bool = True             # token lengths known (a generative file's need a tokenizer)
    model_params: int = 0             # the chosen base model's size, for strategies' rules

    @property
    def generative(self) -> bool:
        return task_named(self.task).serving != "classify"

    def line(self) -> str:
        """The facts in one sentence: labels for a classification table, never for chat data."""
        if getattr(task_named(self.task), "inputs", "text") == "image":
            return (f"{self.rows:,} images, {self.labels} classes; the smallest class has about "
                    f"{self.smallest_class:,} images.")
        if not self.generative:
            return (f"{self.rows:,} rows, {self.labels} labels; the smallest label has about "
                    f"{self.smallest_class:,} examples, texts average {self.mean_tokens:.0f} tokens "
                    f"(95% under {self.p95_tokens}).")
        unit = {"preference": "preference pairs", "plain": "texts"}.get(self.kind or "", "conversations")
        text = f"{self.rows:,} {unit}"
        if self.turns:
            text += f", {self.turns:.1f} messages each on average"
        if self.measured:
            text += (f"; examples average {self.mean_tokens:.0f} tokens (95% under {self.p95_tokens:,}"
                     + (f", the longest {self.max_tokens:,}" if self.max_tokens else "") + ")")
        return text + "."

    @classmethod
    def from_stats(cls, stats: dict, limit: int | None = None, task: str = "text-classification") -> "DataFacts":
        if task_named(task).serving != "classify":       # images are labelled like texts
            return cls.from_generative(stats, limit, task)
        rows = int(stats.get("rows", 0))
        counts = [c for k, c in (stats.get("label_counts") or {}).items() if k]
        smallest = min(counts) if counts else 0
        if limit and limit < rows:             # a stratified subset keeps the proportions
            smallest = max(1, math.floor(smallest * limit / rows)) if smallest else 0
            rows = limit
        length = stats.get("length") or {}
        return cls(rows, int(stats.get("num_labels", len(counts))), smallest,
                   float(length.get("mean") or REF_TOKENS), int(length.get("p95") or REF_TOKENS), task=task)

    @classmethod
    def from_generative(cls, stats: dict, limit: int | None, task: str) -> "DataFacts":
        """Facts of chat, plain-text or preference data (generative_checks' stats: rows, turns,
        token lengths when a tokenizer counted them); no labels."""
        rows = int(stats.get("rows") or stats.get("examples") or 0)
        if limit and limit < rows:
            rows = limit
        length = stats.get("length") or {}
        measured = bool(length.get("mean"))
        mean = float(length.get("mean") or GENERATIVE_TOKENS)
        turns = (stats.get("turns") or {}).get("mean")
        return cls(rows, 0, rows, mean, int(length.get("p95") or mean), task=task, kind=stats.get("kind"),
                   turns=float(turns) if turns else None, max_tokens=length.get("max"), measured=measured)


@dataclass
class Advice:
    recommended: str
    reasons: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    basis: dict[str, str] = field(default_factory=dict)


def when(strategy: str) -> str:
    """One line on when to choose a strategy (its own declaration)."""
    return get_strategy(strategy).advice


def recommend(facts: DataFacts, budget: str = "balanced", cuda: bool = False,
              task: str = "text-classification") -> tuple[str, list[str]]:
    """The strategy whose own rule claims these facts with the lowest priority number; one that
    cannot run here (no CUDA) or that the wizard does not offer is never recommended. When no
    rule claims them: the task's cheapest strategy, with its own line on when to choose it."""
    why = [facts.line()]
    offered = [s for s in strategies_of(task_named(task)) if s.in_wizard and not s.unavailable()]
    claims = [(c[0], s.rank, s.name, c[1]) for s in offered if (c := s.advise(facts, budget, cuda)) is not None]
    if not claims:
        first = offered[0] if offered else strategies_of(task_named(task))[0]
        return first.name, why + [first.advice]
    _, _, pick, reason = min(claims)
    return pick, why + [reason]


def rough_seconds(strategy: str, facts: DataFacts, model_params: int, params: dict | None = None) -> float:
    scale = max(model_params or REF_PARAMS, 1) / REF_PARAMS * max(1.0, facts.mean_tokens / REF_TOKENS)
    return get_strategy(strategy).rough_seconds(facts, scale / ENCODE_TEXTS_PER_S, scale, params or {})


def history_rates(jobs) -> dict[str, float]:
    """Seconds per row of the tenant's finished train jobs, median per strategy."""
    seen: dict[str, list[float]] = {}
    for job in jobs:
        metrics = (job.result or {}).get("metrics") or {}
        rows = metrics.get("test_rows")
        if job.kind != "train" or not rows or metrics.get("train_seconds") is None:
            continue
        seen.setdefault(job.spec.get("strategy"), []).append(metrics["train_seconds"] / (rows / 0.2))
    return {k: statistics.median(v) for k, v in seen.items() if v}


def advise(facts: DataFacts, model_params: int, strategies: list[str], *, budget: str = "balanced",
           cuda: bool = False, history: dict[str, float] | None = None, params: dict | None = None,
           task: str | None = None) -> Advice:
    facts.model_params = int(model_params or 0)
    pick, reasons = recommend(facts, budget, cuda, task or facts.task)
    advice = Advice(pick, reasons)
    for name in strategies:
        if history and name in history:
            advice.seconds[name] = history[name] * facts.rows
            advice.basis[name] = "from your past runs"
        else:
            advice.seconds[name] = rough_seconds(name, facts, model_params, (params or {}).get(name))
            advice.basis[name] = "rough, from reference rates"
    return advice
