"""How sure a quality number is: intervals over the test rows it was measured on.

A metric measured on 20 test rows and one measured on 20,000 do not deserve the same trust; every
quality metric therefore carries an interval. Macro-F1, accuracy and means of per-row scores get a
percentile bootstrap over the test rows (resample the rows with replacement, recompute, keep the
middle `level` of the results); a proportion (preference accuracy) gets the Wilson score interval.
An empty test split has no interval (None), never an exception.

The bootstrap is vectorised: a chunk of resamples at a time is an index matrix (resamples x rows),
and per-class counts come from one `bincount` over it, so 1,000 resamples of 100k rows stay in a
few tens of MB. The numpy Generator is seeded: the same rows give the same interval.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Iterator

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
SEED = 0
BOOTSTRAP = "bootstrap over test rows"
WILSON = "Wilson score interval"
CHUNK_CELLS = 2_000_000          # index-matrix cells per chunk (16 MB of int64)


def interval_info(rows: int, method: str = BOOTSTRAP, level: float = LEVEL,
                  resamples: int | None = RESAMPLES) -> dict:
    """What a metrics dict says of its intervals (key `interval`)."""
    out = {"level": level, "method": method, "rows": int(rows)}
    if method == BOOTSTRAP:
        out["resamples"] = resamples
    return out


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """The bootstrap's row indices, a (chunk x n) matrix at a time; the same for the same (n, seed)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, CHUNK_CELLS // max(n, 1)))
    for start in range(0, resamples, chunk):
        yield rng.integers(0, n, size=(min(chunk, resamples - start), n))


def percentile_bounds(samples: np.ndarray, level: float = LEVEL) -> list[float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail])
    return [float(lo), float(hi)]


def _class_counts(ids: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per resample (row of `ids`), how many times each class 0..k-1 occurs (weighted)."""
    offsets = (np.arange(ids.shape[0]) * k)[:, None]
    flat = (ids + offsets).ravel()
    return np.bincount(flat, weights=None if weights is None else weights.ravel(),
                       minlength=ids.shape[0] * k).reshape(ids.shape[0], k)


def macro_f1_of(true_ids: np.ndarray, pred_ids: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 of each row of (resamples x rows) true/predicted class ids, as sklearn's
    f1_score(average="macro", labels=range(n_labels), zero_division=0): per class
    2TP / (2TP + FP + FN), 0 where that is 0/0, mean over all n_labels classes. Ids at or
    above n_labels count as wrong answers (or missed rows) but are not averaged."""
    k = int(max(n_labels, true_ids.max(initial=0) + 1, pred_ids.max(initial=0) + 1))
    hits = (true_ids == pred_ids).astype(np.float64)
    tp = _class_counts(true_ids, k, hits)[:, :n_labels]
    denom = (_class_counts(true_ids, k) + _class_counts(pred_ids, k))[:, :n_labels]
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=1)


def _as_ids(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def macro_f1_accuracy_intervals(y_true_ids, y_pred_ids, n_labels: int, resamples: int = RESAMPLES,
                                level: float = LEVEL, seed: int = SEED) -> dict:
    """`macro_f1_interval` and `accuracy_interval` ([lo, hi], or None for an empty split) and
    `interval` (level, method, resamples, rows)."""
    t, p = _as_ids(y_true_ids), _as_ids(y_pred_ids)
    info = interval_info(len(t), level=level, resamples=resamples)
    if len(t) == 0:
        return {"macro_f1_interval": None, "accuracy_interval": None, "interval": info}
    f1s, accs = [], []
    for idx in resample_indices(len(t), resamples, seed):
        ti, pi = t[idx], p[idx]
        f1s.append(macro_f1_of(ti, pi, n_labels))
        accs.append((ti == pi).mean(axis=1))
    return {"macro_f1_interval": percentile_bounds(np.concatenate(f1s), level),
            "accuracy_interval": percentile_bounds(np.concatenate(accs), level), "interval": info}


def paired_difference_interval(y_true_ids, pred_a_ids, pred_b_ids, n_labels: int, resamples: int = RESAMPLES,
                               level: float = LEVEL, seed: int = SEED) -> dict:
    """Macro-F1(A) - macro-F1(B) on the same test rows, and its bootstrap interval with both
    classifiers scored on the same resampled rows (so the rows' difficulty cancels out).
    An interval that excludes 0 says the difference is more than the test split's noise."""
    t, a, b = _as_ids(y_true_ids), _as_ids(pred_a_ids), _as_ids(pred_b_ids)
    out = {"difference": None, "interval": None, **interval_info(len(t), level=level, resamples=resamples)}
    if len(t) == 0:
        return out
    full = np.arange(len(t))[None, :]
    out["difference"] = float(macro_f1_of(t[full], a[full], n_labels)[0] - macro_f1_of(t[full], b[full], n_labels)[0])
    diffs = [macro_f1_of(t[idx], a[idx], n_labels) - macro_f1_of(t[idx], b[idx], n_labels)
             for idx in resample_indices(len(t), resamples, seed)]
    out["interval"] = percentile_bounds(np.concatenate(diffs), level)
    return out


def mean_interval(per_row_scores, resamples: int = RESAMPLES, level: float = LEVEL,
                  seed: int = SEED) -> list[float] | None:
    """Percentile bootstrap of the mean of per-row scores (e.g. token F1 of each held-out answer)."""
    scores = np.asarray(per_row_scores, dtype=np.float64).reshape(-1)
    if len(scores) == 0:
        return None
    means = [scores[idx].mean(axis=1) for idx in resample_indices(len(scores), resamples, seed)]
    return percentile_bounds(np.concatenate(means), level)


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> list[float] | None:
    """Wilson score interval of a proportion (successes out of n); None when n is 0."""
    if not n:
        return None
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return [float(lo), float(hi)]


# -- for people ---------------------------------------------------------------------------------

def _bounds(interval, digits: int) -> str:
    lo, hi = interval
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def format_with_interval(value, interval=None, rows: int | None = None, unit: str = "test rows",
                         digits: int = 3) -> str:
    """"0.950 (0.861–0.990) on 20 test rows"; the value alone when there is no interval (older runs)."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    if interval:
        text += f" ({_bounds(interval, digits)})"
        if rows is not None:
            text += f" on {rows:,} {unit}"
    return text


def format_short(value, interval=None, digits: int = 3) -> str:
    """A table cell: "0.950 (0.86–0.99)"; the value alone without an interval."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    return f"{text} ({_bounds(interval, max(digits - 1, 1))})" if interval else text
