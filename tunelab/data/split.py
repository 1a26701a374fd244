"""Deterministic, stratified train/validation/test splits and subsets.

sklearn's stratified splitting refuses classes with a single example, which real files
have; this module apportions every split class by class itself (largest remainder, so
the split sizes are exact) and keeps at least one example of each class in train, so
a rare class is never lost from training. Same data + same seed = same split, on any
machine: randomness comes only from numpy's PCG64 seeded generator, walked over the
labels in sorted order. Each split keeps the file's row order.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .dataset import Splits, TextDataset


def split_dataset(ds: TextDataset, *, validation_fraction: float = 0.1, test_fraction: float = 0.2,
                  seed: int = 0, test: TextDataset | None = None) -> Splits:
    """Train/validation/test. With a user `test` file, it is the test split as given and
    validation is carved from `ds` alone (`validation_fraction` of it)."""
    if test is not None:
        _check_fractions(validation_fraction, 0.0)
        train_idx, val_idx, _ = _stratified_parts(ds, 0, _count(validation_fraction, len(ds)), seed)
        return Splits(ds.subset(train_idx), ds.subset(val_idx), test, test_origin="user")
    _check_fractions(validation_fraction, test_fraction)
    n = len(ds)
    train_idx, val_idx, test_idx = _stratified_parts(
        ds, _count(test_fraction, n), _count(validation_fraction, n), seed)
    return Splits(ds.subset(train_idx), ds.subset(val_idx), ds.subset(test_idx), test_origin="split")


def sample_per_class(ds: TextDataset, k: int, seed: int = 0) -> TextDataset:
    """k random examples of each label (all of them when a label has fewer), for few-shot."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rng = np.random.default_rng(seed)
    chosen = []
    for _, idx in _by_label(ds):
        chosen += list(rng.permutation(idx)[:k])
    return ds.subset(sorted(int(i) for i in chosen))


def stratified_limit(ds: TextDataset, n: int, seed: int = 0) -> TextDataset:
    """A subset of n rows with the label proportions of `ds`, every label present when
    n allows it (for quick runs on big files)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n >= len(ds):
        return ds.subset(range(len(ds)))
    groups = _by_label(ds)
    sizes = limit_counts({lab: len(idx) for lab, idx in groups}, n)
    rng = np.random.default_rng(seed)
    chosen = []
    for label, idx in groups:
        chosen += list(rng.permutation(idx)[:sizes[label]])
    return ds.subset(sorted(int(i) for i in chosen))


def limit_counts(label_counts: dict[str, int], n: int) -> dict[str, int]:
    """Per label, the rows `stratified_limit(ds, n)` keeps of a dataset with these label counts."""
    if n >= sum(label_counts.values()):
        return dict(label_counts)
    if n >= len(label_counts):
        # One of each first, the rest in proportion: a quick run still sees every class.
        rest = {lab: c - 1 for lab, c in label_counts.items()}
        extra = _allocate(rest, n - len(label_counts), rest)
        return {lab: 1 + extra[lab] for lab in label_counts}
    return _allocate(dict(label_counts), n, dict(label_counts))


def _check_fractions(validation: float, test: float) -> None:
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise ValueError(f"validation_fraction ({validation}) and test_fraction ({test}) must be "
                         "in [0, 1) and leave some rows for training")


def _count(fraction: float, n: int) -> int:
    return int(round(fraction * n))


def _by_label(ds: TextDataset) -> list[tuple[str, list[int]]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(ds.examples):
        groups[e.label].append(i)
    return sorted(groups.items())


def split_counts(label_counts: dict[str, int], *, validation_fraction: float = 0.1,
                 test_fraction: float = 0.2, user_test: bool = False) -> dict[str, tuple[int, int, int]]:
    """Per label, the (train, validation, test) rows `split_dataset` gives a dataset with these
    label counts, without the rows: what a job will train and be tested on, known before it runs
    (with a user test file the test column is 0: its rows are the file's)."""
    n = sum(label_counts.values())
    n_test = 0 if user_test else _count(test_fraction, n)
    test_alloc, val_alloc = _allocations(dict(label_counts), n_test, _count(validation_fraction, n))
    return {lab: (c - test_alloc[lab] - val_alloc[lab], val_alloc[lab], test_alloc[lab])
            for lab, c in label_counts.items()}


def _allocations(sizes: dict[str, int], n_test: int, n_val: int) -> tuple[dict[str, int], dict[str, int]]:
    """Per-class shares of n_test, then of n_val, each class keeping at least one example for train."""
    test_alloc = _allocate(sizes, n_test, {lab: s - 1 for lab, s in sizes.items()})
    left = {lab: s - test_alloc[lab] for lab, s in sizes.items()}
    val_alloc = _allocate(left, n_val, {lab: s - 1 for lab, s in left.items()})
    return test_alloc, val_alloc


def _stratified_parts(ds: TextDataset, n_test: int, n_val: int, seed: int):
    """(train, validation, test) index lists with per-class shares of n_test and n_val,
    each class keeping at least one example for train."""
    groups = _by_label(ds)
    test_alloc, val_alloc = _allocations({lab: len(idx) for lab, idx in groups}, n_test, n_val)
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for label, idx in groups:
        order = [int(i) for i in rng.permutation(idx)]
        t, v = test_alloc[label], val_alloc[label]
        test += order[:t]
        val += order[t:t + v]
        train += order[t + v:]
    return sorted(train), sorted(val), sorted(test)


def _allocate(weights: dict[str, int], total: int, caps: dict[str, int]) -> dict[str, int]:
    """Share `total` among classes in proportion to `weights`, none above its cap:
    floors first, then the remaining units to the largest remainders (ties: bigger
    class, then label name, so the result is deterministic)."""
    alloc = {lab: 0 for lab in weights}
    weight_sum = sum(weights.values())
    if total <= 0 or weight_sum <= 0:
        return alloc
    exact = {lab: total * w / weight_sum for lab, w in weights.items()}
    for lab in weights:
        alloc[lab] = max(0, min(math.floor(exact[lab]), caps[lab]))
    order = sorted(weights, key=lambda lab: (-(exact[lab] - math.floor(exact[lab])), -weights[lab], lab))
    left = total - sum(alloc.values())
    while left > 0:
        grew = False
        for lab in order:
            if left and alloc[lab] < caps[lab]:
                alloc[lab] += 1
                left -= 1
                grew = True
        if not grew:
            break
    return alloc
