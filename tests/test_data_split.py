"""Splits and subsets: deterministic, stratified, safe with rare labels."""

from __future__ import annotations

from collections import Counter

import pytest

from tunelab.data import Example, TextDataset, sample_per_class, split_dataset, stratified_limit


def make(counts: dict[str, int]) -> TextDataset:
    rows = [(f"{label} text {i}", label) for label, n in counts.items() for i in range(n)]
    return TextDataset([Example(t, l, i + 2) for i, (t, l) in enumerate(rows)], "text", "label")


def lines(ds: TextDataset) -> list[int]:
    return [e.line for e in ds.examples]


def test_split_sizes_disjoint_and_complete():
    ds = make({"ham": 800, "spam": 200})
    s = split_dataset(ds, validation_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(s.train), len(s.validation), len(s.test)) == (700, 100, 200)
    all_lines = lines(s.train) + lines(s.validation) + lines(s.test)
    assert sorted(all_lines) == lines(ds)
    assert s.test_origin == "split" and s.label_names == ["ham", "spam"]


def test_split_is_stratified():
    s = split_dataset(make({"a": 500, "b": 300, "c": 200}), seed=3)
    assert Counter(s.test.labels) == {"a": 100, "b": 60, "c": 40}
    assert Counter(s.validation.labels) == {"a": 50, "b": 30, "c": 20}


def test_split_is_deterministic():
    ds = make({"a": 60, "b": 40})
    first = split_dataset(ds, seed=7)
    again = split_dataset(ds, seed=7)
    other = split_dataset(ds, seed=8)
    assert lines(first.test) == lines(again.test) and lines(first.train) == lines(again.train)
    assert lines(first.test) != lines(other.test)


def test_rare_labels_stay_in_train():
    ds = make({"a": 50, "b": 50, "once": 1, "twice": 2})
    s = split_dataset(ds, seed=0)
    assert "once" in s.train.labels and "once" not in s.test.labels + s.validation.labels
    assert "twice" in s.train.labels
    assert len(s.train) + len(s.validation) + len(s.test) == len(ds)


def test_user_test_file():
    train, test = make({"a": 40, "b": 60}), make({"a": 5, "b": 5})
    s = split_dataset(train, validation_fraction=0.2, test=test)
    assert s.test is test and s.test_origin == "user"
    assert (len(s.train), len(s.validation)) == (80, 20)
    assert Counter(s.validation.labels) == {"a": 8, "b": 12}


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (-0.1, 0.2), (0.1, 1.0)])
def test_bad_fractions(val, test):
    with pytest.raises(ValueError):
        split_dataset(make({"a": 10, "b": 10}), validation_fraction=val, test_fraction=test)


def test_sample_per_class():
    ds = make({"a": 30, "b": 10, "c": 2})
    few = sample_per_class(ds, 4, seed=1)
    assert Counter(few.labels) == {"a": 4, "b": 4, "c": 2}
    assert lines(few) == lines(sample_per_class(ds, 4, seed=1))
    assert lines(few) == sorted(lines(few))


@pytest.mark.parametrize("n, expected", [
    (100, {"a": 79, "b": 20, "c": 1}),    # one of each, the other 97 in proportion
    (2, {"a": 2}),                          # fewer rows than classes: the biggest first
    (1000, {"a": 800, "b": 195, "c": 5}),  # more than there is: everything
])
def test_stratified_limit(n, expected):
    ds = make({"a": 800, "b": 195, "c": 5})
    sub = stratified_limit(ds, n, seed=0)
    assert Counter(sub.labels) == expected
    assert lines(sub) == lines(stratified_limit(ds, n, seed=0))
