"""Linear heads on frozen (or SetFit-tuned) sentence embeddings."""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
from sklearn.metrics import f1_score

DEFAULT_CS = (1.0, 10.0, 100.0)

CV_MAX_ROWS = 2000
"""At or below this many rows (train + validation), C is chosen by repeated stratified k-fold
cross-validation on train and validation pooled, and the head is then fitted on the pool. The
validation split is a tenth of the data: ~200 rows at 2,000, ~8 at 77, where one row moves its
macro-F1 by several points, so the choice of C is noise, and rows that only score C are rows the
head never learns from. Above it the validation split is large enough to choose on, and the
extra fits would cost seconds (Banking77's 9k rows: ~1.3 s a fit)."""
CV_FOLDS = 5
CV_MIN_FITS = 10
"""Fits per candidate C (folds x repeats): 5-fold x 2; 2-fold (a label with only 2 examples) x 5.
One k-fold split of a few dozen rows is itself noisy; repeating it with other shuffles averages
that out."""
CV_TOLERANCE = 1e-4
"""L-BFGS's gradient tolerance in the folds (1e-5 for the fit that is kept): scoring C needs its
ranking, not the last digits: ~40% fewer iterations (2,000 rows x 77 labels: 11.8 -> 6.8 s of CPU,
the same C chosen; measured)."""


class HeadFit(NamedTuple):
    weight: np.ndarray          # [n_classes, dim]
    bias: np.ndarray            # [n_classes]
    C: float
    selection: dict             # how C was chosen, with the scores of each candidate (for run notes)


def fit_logistic_head(x: np.ndarray, y: np.ndarray, n_classes: int, x_val: np.ndarray | None = None,
                      y_val: np.ndarray | None = None, C: float | None = None, max_iter: int = 300,
                      *, seed: int = 0, cv_max_rows: int = CV_MAX_ROWS) -> HeadFit:
    """Multinomial logistic regression (scikit-learn's objective: cross-entropy + ||W||^2 / 2C).

    Small data (train + validation <= cv_max_rows): C chosen by repeated stratified k-fold CV on
    the pooled rows (k = min(5, the smallest label count), at least 2; a label with a single
    example stays in every training fold), then the head is fitted on the pool. Larger data: C
    chosen on the validation split, the head fitted on train. A given C is used as is (fitted on
    the pool when the data is small). Solved with torch's L-BFGS in float32, warm-started from the
    previous C (they are tried from strongest penalty to weakest): on Banking77 (9k x 384
    features, 77 classes) the three fits take ~4 s against sklearn's ~12 s, to the same
    validation and test macro-F1 (measured)."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    has_val = x_val is not None and y_val is not None and len(y_val) > 0
    small = len(y) + (len(y_val) if has_val else 0) <= cv_max_rows
    if small and has_val:
        x, y = np.concatenate([x, np.asarray(x_val, dtype=np.float32)]), np.concatenate([y, y_val])
    candidates = sorted(DEFAULT_CS)
    with _one_thread(small):
        return _fit(x, y, n_classes, x_val, y_val, C, max_iter, seed, small, has_val, candidates)


def _fit(x, y, n_classes, x_val, y_val, C, max_iter, seed, small, has_val, candidates) -> HeadFit:
    if C is not None:
        selection = {"selection": f"given; fitted on {len(y)} rows", "C": float(C)}
    elif small:
        selection = _cv_select(x, y, candidates, max_iter, seed)
        C = selection["C"]
    elif has_val:
        selection = _validation_select(x, y, x_val, y_val, n_classes, candidates, max_iter)
        C = selection["C"]
    else:
        C = candidates[-1]
        selection = {"selection": f"no validation rows: default; fitted on {len(y)} rows", "C": C}
    present = np.unique(y)
    w = _lbfgs_softmax(_tensor(x), torch.as_tensor(np.searchsorted(present, y)), len(present), C,
                       selection.pop("_w0", None), max_iter)
    weight, bias = _expand(w, present, n_classes)
    return HeadFit(weight, bias, float(C), selection)


@contextlib.contextmanager
def _one_thread(enabled: bool):
    """Small fits on one thread: their tensors are too small to split, and the threads' hand-offs
    cost more than the work, most of all on a busy machine (2 cores shared: 100 rows x 384 x 5
    labels, three fits, 0.2 s on one thread against 10 s on two; 2,000 x 384 x 77: 0.7 s against
    1.5 s; measured)."""
    before = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if enabled:
            torch.set_num_threads(before)


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def _path(x: torch.Tensor, y: np.ndarray, candidates: list[float], max_iter: int, x_test: np.ndarray,
          y_test: np.ndarray, tolerance_grad: float = 1e-5) -> tuple[list[float], list[torch.Tensor]]:
    """Macro-F1 on (x_test, y_test) of a fit on (x, y) at each C, each warm-started from the last."""
    present = np.unique(y)
    yt = torch.as_tensor(np.searchsorted(present, y))
    scores, ws, w = [], [], None
    for c in candidates:
        w = _lbfgs_softmax(x, yt, len(present), c, w, max_iter, tolerance_grad)
        scores.append(_macro_f1(y_test, present[(x_test @ w[:-1].numpy() + w[-1].numpy()).argmax(1)]))
        ws.append(w)
    return scores, ws


def _validation_select(x, y, x_val, y_val, n_classes, candidates, max_iter) -> dict:
    scores, ws = _path(_tensor(x), y, candidates, max_iter, np.asarray(x_val, dtype=np.float32), np.asarray(y_val))
    best = int(np.argmax(scores))            # ties: the first, i.e. the strongest penalty
    return {"selection": f"validation split ({len(y_val)} rows); fitted on {len(y)} train rows",
            "C": candidates[best], "_w0": ws[best],
            "candidates": [{"C": c, "macro_f1": round(s, 4)} for c, s in zip(candidates, scores)]}


def _cv_select(x: np.ndarray, y: np.ndarray, candidates: list[float], max_iter: int, seed: int) -> dict:
    """Repeated stratified k-fold over the labels with 2+ examples; labels with one example are in
    every training fold (never scored: there is nothing to hold out)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    labels, counts = np.unique(y, return_counts=True)
    multi = labels[counts >= 2]
    scored = np.flatnonzero(np.isin(y, multi))
    always = np.flatnonzero(~np.isin(y, multi))
    if len(multi) == 0:
        return {"selection": f"every label has one example: default; fitted on {len(y)} rows",
                "C": candidates[-1]}
    k = int(max(2, min(CV_FOLDS, counts[counts >= 2].min())))
    repeats = math.ceil(CV_MIN_FITS / k)
    xt = _tensor(x)
    folds = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    table, last = [], None
    for train_f, test_f in folds.split(scored, y[scored]):
        train = np.concatenate([scored[train_f], always])
        test = scored[test_f]
        scores, last = _path(xt[train], y[train], candidates, max_iter, x[test], y[test], CV_TOLERANCE)
        table.append(scores)
    table = np.asarray(table)
    mean, std = table.mean(0), table.std(0)
    best = int(np.argmax(mean))              # ties: the first, i.e. the strongest penalty
    return {"selection": f"{k}-fold CV ×{repeats} on {len(y)} rows (train + validation); fitted on all of them",
            "C": candidates[best], "_w0": last[best],          # warm-starts the final fit on all the rows
            "candidates": [{"C": c, "macro_f1_mean": round(float(m), 4), "macro_f1_std": round(float(s), 4)}
                           for c, m, s in zip(candidates, mean, std)]}


def _lbfgs_softmax(x: torch.Tensor, y: torch.Tensor, k: int, C: float, w0: torch.Tensor | None,
                   max_iter: int, tolerance_grad: float = 1e-5) -> torch.Tensor:
    """[dim + 1, k] (the last row is the intercept, not penalised) minimising mean cross-entropy +
    ||W||^2 / (2 C n): the minimiser of scikit-learn's sum-form objective. Two classes: scikit-
    learn fits one logit (w); softmax over two rows penalises w1 and w0 = -w1, half of w each, so
    the same fit needs C / 2."""
    n, d = x.shape
    C = C / 2 if k == 2 else C
    xb = torch.cat([x, torch.ones(n, 1)], dim=1)
    w = (torch.zeros(d + 1, k) if w0 is None else w0.clone()).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=tolerance_grad, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xb @ w, y) + (w[:-1] ** 2).sum() / (2 * C * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


def _expand(w: torch.Tensor, present: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Back to all n_classes: classes absent from training get a bias that never wins."""
    weight = np.zeros((n_classes, w.shape[0] - 1), dtype=np.float32)
    bias = np.full(n_classes, -1e4, dtype=np.float32)
    weight[present] = w[:-1].T.numpy()
    bias[present] = w[-1].numpy()
    return weight, bias
