"""The logistic-regression head solves scikit-learn's objective (only faster): same probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tunelab.models.predictors import softmax
from tunelab.strategies.heads import CV_MAX_ROWS, DEFAULT_CS, fit_logistic_head


def blobs(n_classes: int, n: int = 600, dim: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = rng.integers(0, n_classes, size=n)
    x = centres[y] + rng.normal(scale=1.5, size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)   # like the normalised sentence embeddings it gets
    return x.astype(np.float32), y


@pytest.mark.parametrize("n_classes, C", [(2, 1.0), (2, 100.0), (5, 10.0), (12, 1.0)])
def test_same_probabilities_as_sklearn(n_classes, C):
    x, y = blobs(n_classes)
    weight, bias, chosen, _ = fit_logistic_head(x, y, n_classes, C=C)
    theirs = LogisticRegression(C=C, max_iter=2000, tol=1e-8).fit(x, y).predict_proba(x)
    ours = softmax(x @ weight.T + bias)
    assert chosen == C
    assert np.abs(ours - theirs).max() < 2e-3
    assert (ours.argmax(1) == theirs.argmax(1)).mean() > 0.995


def test_C_is_chosen_on_validation_and_absent_classes_never_win():
    x, y = blobs(4, n=800)
    keep = y != 3                        # class 3 has no training example
    weight, bias, chosen, _ = fit_logistic_head(x[keep][:600], y[keep][:600], 4, x[keep][600:], y[keep][600:])
    assert chosen in (1.0, 10.0, 100.0)
    predicted = (x @ weight.T + bias).argmax(1)
    assert 3 not in set(predicted)
    assert (predicted[keep] == y[keep]).mean() > 0.8


def noisy(n_classes: int, n: int, seed: int = 0):
    """Overlapping classes, so the candidates' scores differ (and a fold's choice is not a tie)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 16))
    y = np.arange(n) % n_classes
    x = centres[y] + rng.normal(scale=2.5, size=(n, 16))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


@pytest.mark.parametrize("rows, threshold, chosen_by", [
    (80, CV_MAX_ROWS, "5-fold CV ×2 on 80 rows"),      # train + validation pooled
    (300, 300, "5-fold CV ×2 on 300 rows"),            # at the threshold: still small
    (300, 299, "validation split (30 rows)"),          # above it: unchanged
])
def test_C_is_chosen_by_cross_validation_only_on_small_data(rows, threshold, chosen_by):
    x, y = noisy(4, rows)
    n_val = rows // 10
    fit = fit_logistic_head(x[n_val:], y[n_val:], 4, x[:n_val], y[:n_val], cv_max_rows=threshold)
    assert fit.selection["selection"].startswith(chosen_by)
    assert fit.selection["C"] == fit.C in DEFAULT_CS
    scores = fit.selection["candidates"]
    assert [s["C"] for s in scores] == sorted(DEFAULT_CS)
    if "CV" in chosen_by:
        assert all(0 <= s["macro_f1_mean"] <= 1 and s["macro_f1_std"] >= 0 for s in scores)
        assert fit.C == max(scores, key=lambda s: s["macro_f1_mean"])["C"]


def test_small_data_trains_on_the_validation_rows_too():
    x, y = noisy(3, 60)
    y_val = np.array([0, 1, 2, 2])              # label 2 only in validation
    keep = y != 2
    small = fit_logistic_head(x[keep], y[keep], 3, x[:4], y_val, C=10.0)
    large = fit_logistic_head(x[keep], y[keep], 3, x[:4], y_val, C=10.0, cv_max_rows=10)
    assert small.bias[2] > -100                  # learnt from the pooled validation rows
    assert large.bias[2] == -1e4                 # large data: validation rows only score C


@pytest.mark.parametrize("counts, folds", [
    ({0: 20, 1: 20, 2: 20}, "5-fold CV ×2"),
    ({0: 20, 1: 3, 2: 20}, "3-fold CV ×4"),     # k = the smallest label's count
    ({0: 20, 1: 2, 2: 20}, "2-fold CV ×5"),
    ({0: 20, 1: 1, 2: 20}, "5-fold CV ×2"),     # a single example: in every training fold
    ({0: 1, 1: 1, 2: 2}, "2-fold CV ×5"),
    ({0: 1, 1: 1, 2: 1}, "every label has one example"),
])
def test_cross_validation_folds_follow_the_rarest_label_and_never_fail(counts, folds):
    y = np.array([c for c, n in counts.items() for _ in range(n)])
    x = noisy(3, len(y))[0] + np.eye(3, 16, dtype=np.float32)[y]
    fit = fit_logistic_head(x, y, 3)
    assert fit.selection["selection"].startswith(folds)
    predicted = (x @ fit.weight.T + fit.bias).argmax(1)
    assert set(predicted) <= set(counts)
    assert fit.bias.max() < 1e3 and (fit.bias > -100).sum() == 3      # every label, singletons too, can win


def test_cross_validation_is_deterministic():
    x, y = noisy(5, 60, seed=3)
    a = fit_logistic_head(x[:50], y[:50], 5, x[50:], y[50:])
    b = fit_logistic_head(x[:50], y[:50], 5, x[50:], y[50:])
    assert a.selection == b.selection and a.C == b.C
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
