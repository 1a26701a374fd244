"""What the wizard's advisor asks of a strategy: a rough time without loading any model, and
whether it is the one to recommend for a dataset's facts (size, labels, lengths) and a budget.

Rates measured with MiniLM (22.7M parameters) on ~16-token texts on a 2-core CPU; the advisor
scales them by model size and text length. The job's pre-flight measures the real run."""

from __future__ import annotations

import math

LOAD_SECONDS = 8.0


def split_rows(facts) -> tuple[float, float, float]:
    """(train, validation, test) rows of the default split."""
    return facts.rows * 0.7, facts.rows * 0.1, facts.rows * 0.2


def per_class_in_train(facts) -> float:
    return facts.smallest_class * 0.7         # what the training split keeps of the smallest label


def finetune_seconds(facts, per_text: float, scale: float, params: dict, samples_per_s: float) -> float:
    train, val, test = split_rows(facts)
    batch = int(params.get("batch_size") or 32)
    per_epoch = max(1, math.ceil(train / batch))
    epochs = int(params.get("epochs") or 3)
    steps = per_epoch * max(epochs, math.ceil(int(params.get("min_steps") or 200) / per_epoch))
    return LOAD_SECONDS + steps * batch * scale / samples_per_s + (val * epochs + test) * per_text


def long_texts(facts) -> bool:
    return facts.p95_tokens > 64
