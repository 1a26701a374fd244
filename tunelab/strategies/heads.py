"""Linear heads on frozen (or SetFit-tuned) sentence embeddings."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

DEFAULT_CS = (1.0, 10.0, 100.0)


def sklearn_head_to_linear(clf: LogisticRegression, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(W [n_classes, dim], b [n_classes]) such that softmax(W x + b) = clf.predict_proba(x)."""
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1 and n_classes == 2:
        # Binary LR is sigmoid(w x + b) = softmax([0, w x + b])[1].
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    weight = np.zeros((n_classes, coef.shape[1]), dtype=np.float32)
    bias = np.full(n_classes, -1e4, dtype=np.float32)   # classes absent from training never win
    weight[clf.classes_] = coef
    bias[clf.classes_] = intercept
    return weight, bias


def fit_logistic_head(x: np.ndarray, y: np.ndarray, n_classes: int, x_val: np.ndarray | None = None,
                      y_val: np.ndarray | None = None, C: float | None = None,
                      max_iter: int = 300) -> tuple[np.ndarray, np.ndarray, float]:
    """Multinomial logistic regression; C chosen on the validation split when not given."""
    candidates = [C] if C is not None else list(DEFAULT_CS)
    if x_val is None or len(candidates) == 1 or len(y_val) == 0:
        candidates = candidates[-1:] if C is None else candidates
    best = None
    for c in candidates:
        clf = LogisticRegression(C=c, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # lbfgs convergence chatter on tiny data
            clf.fit(x, y)
        score = f1_score(y_val, clf.predict(x_val), average="macro") if len(candidates) > 1 else 0.0
        if best is None or score > best[0]:
            best = (score, c, clf)
    _, c, clf = best
    weight, bias = sklearn_head_to_linear(clf, n_classes)
    return weight, bias, c
