"""Quality and speed on the held-out split."""

from __future__ import annotations

import time

import numpy as np


def classification_metrics(y_true: list[str], y_pred: list[str], label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows: true label, columns: predicted, in label_names order)."""
    # Imported here: sklearn takes a second to load, and the server imports this module for its
    # tables without scoring anything.
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=label_names, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=label_names, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=label_names, average="weighted", zero_division=0)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(label_names)},
        "confusion_matrix": {"labels": label_names,
                             "matrix": confusion_matrix(y_true, y_pred, labels=label_names).tolist()},
    }


def timed_predict(predictor, texts: list[str]) -> tuple[np.ndarray, dict]:
    """Probabilities plus latency per example and throughput, measured on this batch."""
    t0 = time.perf_counter()
    proba = predictor.predict_proba(texts)
    seconds = time.perf_counter() - t0
    n = max(len(texts), 1)
    return proba, {"predict_seconds": seconds, "latency_ms_per_example": 1000 * seconds / n,
                   "throughput_per_s": n / seconds if seconds > 0 else 0.0}
