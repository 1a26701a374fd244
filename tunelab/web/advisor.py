"""The wizard's advisor: transfer learning against fine-tuning in plain words, one recommendation
from the dataset's size and labels, the model and the budget, and a rough time for each strategy.

Times are rough on purpose (no model is loaded to compute them): rates measured on the shared
data on a 2-core CPU with MiniLM, scaled by model size and text length, and replaced by the
tenant's own past runs of the same strategy when there are some. The job's pre-flight check
measures the real run before any work and refuses what would not fit.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

TRANSFER = ("It keeps the model as it is and reuses what it already knows. "
            "Zero-shot compares each text with the label names and trains nothing; few-shot tunes on a "
            "handful of examples per label; a linear probe trains one small layer on top of the frozen "
            "model. Fast and cheap, and strong on short texts and clear labels.")
FINETUNE = ("It changes the model's own weights on your examples. Full fine-tuning updates every "
            "layer: the best quality on long or unusual texts, and the most compute. LoRA trains small "
            "add-on adapters instead: close to the same quality with far less memory and tiny model files. "
            "QLoRA does LoRA on a 4-bit copy of the model, for large models on a GPU.")
WHEN = {
    "zero-shot": "No labelled examples needed: it matches texts to your label names. A baseline to beat.",
    "few-shot": "A few examples per label (8 by default). For when labelling is expensive.",
    "linear-probe": "Seconds to train, cheap to serve. Usually the best value on short texts.",
    "full": "All layers trained. The quality ceiling; the most time and memory.",
    "lora": "Adapters on a frozen model: near full quality with less memory, small files.",
    "qlora": "LoRA on a 4-bit model: the least memory for big models. Needs an NVIDIA GPU.",
}
BUDGETS = {"fast": "as fast and cheap as possible", "balanced": "balanced", "best": "the best quality"}

# Measured with MiniLM (22.7M parameters) on ~16-token texts, 2-core CPU (README's benchmark notes).
ENCODE_TEXTS_PER_S = 400.0
TRAIN_SAMPLES_PER_S = {"full": 185.0, "lora": 210.0, "qlora": 120.0}
LOAD_SECONDS = 8.0
REF_PARAMS, REF_TOKENS = 22.7e6, 16.0


@dataclass
class DataFacts:
    rows: int
    labels: int
    smallest_class: int
    mean_tokens: float
    p95_tokens: int

    @classmethod
    def from_stats(cls, stats: dict, limit: int | None = None) -> "DataFacts":
        rows = int(stats.get("rows", 0))
        counts = [c for k, c in (stats.get("label_counts") or {}).items() if k]
        smallest = min(counts) if counts else 0
        if limit and limit < rows:             # a stratified subset keeps the proportions
            smallest = max(1, math.floor(smallest * limit / rows)) if smallest else 0
            rows = limit
        length = stats.get("length") or {}
        return cls(rows, int(stats.get("num_labels", len(counts))), smallest,
                   float(length.get("mean") or REF_TOKENS), int(length.get("p95") or REF_TOKENS))


@dataclass
class Advice:
    recommended: str
    reasons: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    basis: dict[str, str] = field(default_factory=dict)


def recommend(facts: DataFacts, budget: str = "balanced", cuda: bool = False) -> tuple[str, list[str]]:
    per_class = facts.smallest_class * 0.7         # what the training split keeps of the smallest label
    why = [f"{facts.rows:,} rows, {facts.labels} labels; the smallest label has about "
           f"{facts.smallest_class:,} examples, texts average {facts.mean_tokens:.0f} tokens "
           f"(95% under {facts.p95_tokens})."]
    if per_class < 6:
        why.append("Some labels have too few examples to learn from: zero-shot needs none, and it tells "
                   "you how far the label names alone go. Label more examples, then try few-shot.")
        return "zero-shot", why
    if per_class < 30:
        why.append("Tens of examples per label: few-shot (SetFit) gets the most out of a small labelled set; "
                   "fine-tuning would overfit.")
        return "few-shot", why
    if budget == "fast":
        why.append("You asked for speed: a linear probe trains in seconds and serves at the model's speed.")
        return "linear-probe", why
    long_texts = facts.p95_tokens > 64
    if budget == "best":
        pick = "full" if (cuda or facts.rows <= 5000) else "lora"
        why.append("You asked for the best quality: fine-tuning adapts the model itself to your texts. "
                   + ("Full fine-tuning fits this size." if pick == "full" else
                      "LoRA keeps memory and time reasonable on this much data without a GPU."))
        return pick, why
    if long_texts:
        why.append("Texts are long: frozen features summarise them less well, so LoRA fine-tuning is the "
                   "better value.")
        return "lora", why
    why.append("Enough examples and short texts: a linear probe is usually within a point or two of "
               "fine-tuning at a fraction of the cost. Compare it with LoRA to be sure.")
    return "linear-probe", why


def rough_seconds(strategy: str, facts: DataFacts, model_params: int, params: dict | None = None) -> float:
    p = params or {}
    scale = max(model_params or REF_PARAMS, 1) / REF_PARAMS * max(1.0, facts.mean_tokens / REF_TOKENS)
    per_text = scale / ENCODE_TEXTS_PER_S
    train, val, test = facts.rows * 0.7, facts.rows * 0.1, facts.rows * 0.2
    if strategy == "zero-shot":
        return LOAD_SECONDS + (facts.labels + test) * per_text
    if strategy == "linear-probe":
        return LOAD_SECONDS + (train + val + test) * per_text
    if strategy == "few-shot":
        return LOAD_SECONDS + int(p.get("max_pairs") or 2000) * 3 * per_text + test * per_text
    batch = int(p.get("batch_size") or 32)
    per_epoch = max(1, math.ceil(train / batch))
    epochs = int(p.get("epochs") or 3)
    steps = per_epoch * min(max(epochs, math.ceil(int(p.get("min_steps") or 200) / per_epoch)), max(20, epochs))
    rate = TRAIN_SAMPLES_PER_S.get(strategy, 185.0)
    return LOAD_SECONDS + steps * batch * scale / rate + (val * epochs + test) * per_text


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
           cuda: bool = False, history: dict[str, float] | None = None, params: dict | None = None) -> Advice:
    pick, reasons = recommend(facts, budget, cuda)
    advice = Advice(pick, reasons)
    for name in strategies:
        if history and name in history:
            advice.seconds[name] = history[name] * facts.rows
            advice.basis[name] = "from your past runs"
        else:
            advice.seconds[name] = rough_seconds(name, facts, model_params, (params or {}).get(name))
            advice.basis[name] = "rough, from reference rates"
    return advice
