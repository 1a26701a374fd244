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
    if n >= len(groups):
        # One of each first, the rest in proportion: a quick run still sees every class.
        extra = _allocate({lab: len(idx) - 1 for lab, idx in groups}, n - len(groups),
                          {lab: len(idx) - 1 for lab, idx in groups})
        sizes = {lab: 1 + extra[lab] for lab, _ in groups}
    else:
        sizes = _allocate({lab: len(idx) for lab, idx in groups}, n,
                          {lab: len(idx) for lab, idx in groups})
    rng = np.random.default_rng(seed)
    chosen = []
    for label, idx in groups:
        chosen += list(rng.permutation(idx)[:sizes[label]])
    return ds.subset(sorted(int(i) for i in chosen))


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


def _stratified_parts(ds: TextDataset, n_test: int, n_val: int, seed: int):
    """(train, validation, test) index lists with per-class shares of n_test and n_val,
    each class keeping at least one example for train."""
    groups = _by_label(ds)
    sizes = {lab: len(idx) for lab, idx in groups}
    test_alloc = _allocate(sizes, n_test, {lab: s - 1 for lab, s in sizes.items()})
    left = {lab: s - test_alloc[lab] for lab, s in sizes.items()}
    val_alloc = _allocate(left, n_val, {lab: s - 1 for lab, s in left.items()})
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
