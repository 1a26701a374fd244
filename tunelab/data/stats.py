"""Summary numbers for a dataset: size, label balance and text lengths.

Lengths are in model tokens when a tokenizer's counter is given, else in whitespace
words (cheap, tokenizer-free); the dict says which in `length_unit`, because a p95 of
"120" means very different things in the two units.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from .dataset import TextDataset

CountTokens = Callable[[list[str]], list[int]]
HISTOGRAM_BINS = 20


def word_counts(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def text_lengths(ds: TextDataset, count_tokens: CountTokens | None = None) -> tuple[list[int], str]:
    """(length per example, unit name)."""
    if count_tokens is None:
        return word_counts(ds.texts), "words"
    lengths = list(count_tokens(ds.texts))
    if len(lengths) != len(ds):
        raise ValueError(f"count_tokens returned {len(lengths)} lengths for {len(ds)} texts")
    return [int(n) for n in lengths], "tokens"


def compute_stats(ds: TextDataset, count_tokens: CountTokens | None = None) -> dict:
    lengths, unit = text_lengths(ds, count_tokens)
    return stats_from_lengths(ds, lengths, unit)


def stats_from_lengths(ds: TextDataset, lengths: list[int], unit: str) -> dict:
    """compute_stats with lengths already counted (validation counts them only once)."""
    counts = Counter(ds.labels)
    # Most frequent first; equal counts in name order so the output is stable.
    label_counts = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "rows": len(ds),
        # Missing labels ("") stay in label_counts (counts sum to rows) but are no class.
        "num_labels": len([label for label in counts if label]),
        "label_counts": label_counts,
        "length_unit": unit,
        "length": _length_summary(lengths),
        "histogram": _histogram(lengths),
    }


def _length_summary(lengths: list[int]) -> dict:
    if not lengths:
        return {"mean": 0.0, "p50": 0, "p95": 0, "max": 0}
    arr = np.asarray(lengths)
    return {"mean": round(float(arr.mean()), 2),
            "p50": int(np.percentile(arr, 50, method="nearest")),
            "p95": int(np.percentile(arr, 95, method="nearest")),
            "max": int(arr.max())}


def _histogram(lengths: list[int]) -> dict:
    if not lengths:
        return {"bins": [], "counts": []}
    arr = np.asarray(lengths)
    # Integer lengths: never more bins than distinct values in the range.
    bins = max(1, min(HISTOGRAM_BINS, int(arr.max() - arr.min()) + 1))
    counts, edges = np.histogram(arr, bins=bins)
    return {"bins": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}
