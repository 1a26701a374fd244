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


# ---- image classifiers: the same answer, for images ---------------------------------------------

class ImageRefused(ValueError):
    """An uploaded image that cannot be classified: which one, why (a stable code), the status."""

    def __init__(self, index: int, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.index, self.code, self.message, self.status = index, code, message, status


def model_inputs(model) -> str:
    """What a tuned model (db.models.TunedModel) takes: "text" or "image" (its task's `inputs`)."""
    from ..strategies import task_named

    try:
        task = task_named((getattr(model, "metrics", None) or {}).get("task") or "text-classification")
    except KeyError:
        return "text"
    return getattr(task, "inputs", "text")


def decode_base64(value: str, index: int, max_bytes: int) -> bytes:
    """An image's bytes from base64 (bare or a data: URL); the size is checked before decoding."""
    import base64
    import binascii

    payload = value.split(",", 1)[1] if value.startswith("data:") else value
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageRefused(index, "image_too_large", f"Image {index} is over {max_bytes / 1e6:.1f} MB.", 413)
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused(index, "bad_image", f"Image {index} is not valid base64.") from None


def read_images(blobs: list[bytes], max_bytes: int) -> list:
    """PIL images (RGB, EXIF applied) from uploaded files' bytes, each checked by
    data.images.read_image_bytes (pixel limit, decompression bombs, one frame); ImageRefused for
    the first that is not an image this can classify."""
    from ..data import DataError
    from ..data.images import read_image_bytes

    out = []
    for i, data in enumerate(blobs):
        if not data:
            raise ImageRefused(i, "empty_file", f"Image {i} is empty.")
        if len(data) > max_bytes:
            raise ImageRefused(i, "image_too_large", f"Image {i} is over {max_bytes / 1e6:.1f} MB.", 413)
        try:
            out.append(read_image_bytes(data))
        except DataError as exc:
            issue = exc.issues[0] if exc.issues else None
            raise ImageRefused(i, issue.code if issue else "bad_image",
                               f"Image {i}: {issue.message if issue else exc}") from None
    return out


def predict_images(predictor, images: list, filenames: list[str | None] | None = None, top_k: int = 5) -> list[dict]:
    """The class of each image, with the top_k probabilities (the text answer's shape, by index)."""
    proba = predictor.predict_proba(images)
    names = predictor.label_names
    filenames = filenames or [None] * len(images)
    out = []
    for i, (filename, row) in enumerate(zip(filenames, proba)):
        order = row.argsort()[::-1][:top_k]
        out.append({"index": i, "filename": filename, "label": names[int(order[0])], "score": float(row[order[0]]),
                    "scores": {names[int(k)]: float(row[k]) for k in order}})
    return out
