"""The logistic-regression head solves scikit-learn's objective (only faster): same probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tunelab.models.predictors import softmax
from tunelab.strategies.heads import fit_logistic_head


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
    weight, bias, chosen = fit_logistic_head(x, y, n_classes, C=C)
    theirs = LogisticRegression(C=C, max_iter=2000, tol=1e-8).fit(x, y).predict_proba(x)
    ours = softmax(x @ weight.T + bias)
    assert chosen == C
    assert np.abs(ours - theirs).max() < 2e-3
    assert (ours.argmax(1) == theirs.argmax(1)).mean() > 0.995


def test_C_is_chosen_on_validation_and_absent_classes_never_win():
    x, y = blobs(4, n=800)
    keep = y != 3                        # class 3 has no training example
    weight, bias, chosen = fit_logistic_head(x[keep][:600], y[keep][:600], 4, x[keep][600:], y[keep][600:])
    assert chosen in (1.0, 10.0, 100.0)
    predicted = (x @ weight.T + bias).argmax(1)
    assert 3 not in set(predicted)
    assert (predicted[keep] == y[keep]).mean() > 0.8
