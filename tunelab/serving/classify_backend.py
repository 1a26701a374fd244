"""Classifiers as served in a model server: one backend object per deployment (PyTorch, or
onnxruntime on an ONNX export), and a micro-batcher that gathers concurrent requests into one
forward.

Why batch: on a small CPU one MiniLM forward costs ~25 ms of fixed overhead whatever its rows
(models/batch_shapes.py), so 32 requests of one text each answered one by one spend most of their
time on that overhead; gathered for a few milliseconds into one forward they share it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..artifacts.store import ArtifactError, load_artifact, read_manifest
from ..models.image_predictors import IMAGE_KINDS
from ..models.predictors import PREDICTOR_KINDS
from .errors import BadServingRequest, ServerUnavailable, ServingError

ENGINES = ("torch", "onnx", "onnx-int8")
# Kinds that map texts or images to class probabilities (a tuned causal LM does not).
CLASSIFIER_KINDS = tuple(k for k, c in PREDICTOR_KINDS.items() if hasattr(c, "predict_proba"))


class ClassifierBackend(Protocol):
    label_names: list[str]
    inputs: str                    # "text" | "image"

    def predict_proba(self, items: list) -> np.ndarray: ...


class TorchClassifier:
    """A ClassifierBackend on the artifact's own predictor (models/predictors.py)."""

    def __init__(self, predictor, inputs: str):
        self.predictor, self.inputs = predictor, inputs
        self.label_names: list[str] = list(predictor.label_names)
        # Fast tokenizers are not reentrant ("Already borrowed" under concurrent calls), and one
        # forward at a time uses every core anyway.
        self._lock = threading.Lock()

    def predict_proba(self, items: list) -> np.ndarray:
        if not items:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        with self._lock:
            return np.asarray(self.predictor.predict_proba(list(items)), dtype=np.float32)


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise BadServingRequest(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")


def open_classifier(folder: Path, engine: str = "torch", work: Path | None = None) -> ClassifierBackend:
    """The tuned classifier in `folder` on `engine`. ONNX engines export it once into
    work/onnx/<content hash> and reuse that export while the folder's content is the same
    (no `work`: a temporary folder, exported again each time)."""
    from .onnx_export import OnnxClassifier, export_classifier, folder_hash

    _check_engine(engine)
    folder = Path(folder)
    try:
        kind = read_manifest(folder).get("kind")
    except ArtifactError as e:
        raise BadServingRequest(str(e)) from e
    if kind not in CLASSIFIER_KINDS:
        raise BadServingRequest(f"{folder.name} holds a {kind!r} model, not a classifier: the classify "
                                f"servers take {', '.join(CLASSIFIER_KINDS)}")
    if engine == "torch":
        return TorchClassifier(load_artifact(folder), "image" if kind in IMAGE_KINDS else "text")
    root = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="tunelab-onnx-"))
    out = root / "onnx" / folder_hash(folder)
    with _export_lock(out):
        graph = export_classifier(folder, out, int8=engine == "onnx-int8")
    return OnnxClassifier(graph)


@contextmanager
def _export_lock(out: Path):
    """An exclusive file lock per export folder: replicas starting together export once."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


@dataclass
class _Request:
    items: list
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Gathers concurrent callers' items into one fn call: the first waiting request opens a
    window of window_ms; requests arriving in it (up to max_batch items) join its batch. One
    batch runs at a time, on a thread of the batcher's own; callers block until their rows come
    back. window_ms=0: no batching, fn is called directly by each caller.

    The window is waited only under load (the last batch gathered several requests): a lone
    request after a lone request goes at once, so light traffic pays no window (a lone MiniLM
    request: ~10 ms, +5 ms with the window); the first requests of a burst go alone and the rest
    gather while that forward runs."""

    def __init__(self, fn: Callable[[list], np.ndarray], window_ms: float = 5.0, max_batch: int = 32):
        if window_ms < 0 or max_batch < 1:
            raise ValueError(f"window_ms must be >= 0 and max_batch >= 1 (got {window_ms}, {max_batch})")
        self.fn, self.window, self.max_batch = fn, window_ms / 1000.0, int(max_batch)
        self.stats: dict = {"batches": 0, "items": 0}
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._loaded = False            # the last batch held more than one request
        self._thread: threading.Thread | None = None
        if self.window > 0:
            self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
            self._thread.start()

    def __call__(self, items: list) -> np.ndarray:
        items = list(items)
        if self._closed:
            raise ServerUnavailable("the model server is shutting down; send the request again")
        if self._thread is None or not items:
            out = self.fn(items)
            with self._cond:
                self.stats["batches"] += 1
                self.stats["items"] += len(items)
            return out
        request = _Request(items)
        with self._cond:
            if self._closed:
                raise ServerUnavailable("the model server is shutting down; send the request again")
            self._queue.append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def close(self) -> None:
        """Fails the callers still waiting (the batch running now finishes) and stops the thread."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for request in pending:
            request.error = ServerUnavailable("the model server closed before answering; send the request again")
            request.done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _take(self) -> list[_Request] | None:
        """The next batch: waits for a first request, then (under load) until its window closes or
        max_batch items are waiting. None once closed."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = self._queue[0].arrived + (self.window if self._loaded else 0.0)
            while not self._closed and sum(len(r.items) for r in self._queue) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._closed:
                return None
            batch = [self._queue.popleft()]
            size = len(batch[0].items)
            # Whole requests only: a caller's items are never split across forwards.
            while self._queue and size + len(self._queue[0].items) <= self.max_batch:
                size += len(self._queue[0].items)
                batch.append(self._queue.popleft())
            self._loaded = len(batch) > 1
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._answer(batch)

    def _answer(self, batch: list[_Request]) -> None:
        items = [item for r in batch for item in r.items]
        try:
            out = np.asarray(self.fn(items))
            if len(out) != len(items):
                raise ServingError(f"the classifier returned {len(out)} rows for {len(items)} items")
            with self._cond:
                self.stats["batches"] += 1
                self.stats["items"] += len(items)
            start = 0
            for r in batch:
                r.result = out[start:start + len(r.items)]
                start += len(r.items)
        except BaseException as e:      # noqa: BLE001  every caller of the batch hears of it
            for r in batch:
                r.error = e
        finally:
            for r in batch:
                r.done.set()
