"""Loaded tuned models, kept in a small in-process LRU so a playground or an endpoint does not
reload weights for every request."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from ..artifacts import load_artifact


class PredictorCache:
    def __init__(self, size: int = 4):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, artifact: str | Path):
        key = str(artifact)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        predictor = load_artifact(Path(artifact))    # outside the lock: loading takes seconds
        with self._lock:
            self._items[key] = predictor
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return predictor

    def forget(self, artifact: str | Path) -> None:
        with self._lock:
            self._items.pop(str(artifact), None)


def predict(predictor, texts: list[str], top_k: int = 5) -> list[dict]:
    proba = predictor.predict_proba(texts)
    names = predictor.label_names
    out = []
    for text, row in zip(texts, proba):
        order = row.argsort()[::-1][:top_k]
        out.append({"text": text, "label": names[int(order[0])], "score": float(row[order[0]]),
                    "scores": {names[int(i)]: float(row[i]) for i in order}})
    return out
