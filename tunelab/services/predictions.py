"""Loaded tuned models, kept in a small in-process LRU so a playground or an endpoint does not
reload weights for every request."""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from ..security.storage import SEALED, open_sealed


class PredictorCache:
    def __init__(self, size: int = 4, home: Path | None = None):
        self.size, self._items, self._lock, self.home = size, OrderedDict(), threading.Lock(), home

    def get(self, artifact: str | Path):
        key = str(artifact)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        predictor = self._load(Path(artifact))       # outside the lock: loading takes seconds
        with self._lock:
            self._items[key] = predictor
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return predictor

    def _load(self, artifact: Path):
        # Imported here: loading a model needs torch, and the API server should start (and
        # answer everything but predictions) without paying for it.
        from ..artifacts import load_artifact

        if not artifact.name.endswith(SEALED):
            return load_artifact(artifact)
        # Sealed (encrypted) model folder: decrypted into a private temp dir only while loading;
        # the weights then live in memory (mmapped files stay readable after the unlink).
        tenant_id = artifact.relative_to(Path(self.home) / "jobs").parts[0]
        with tempfile.TemporaryDirectory(prefix="tunelab-model-") as tmp:
            return load_artifact(open_sealed(self.home, tenant_id, artifact, Path(tmp) / "m"))

    def forget_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k.startswith(prefix)]:
                del self._items[key]

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
