"""Micro-batching: concurrent callers gathered into fewer forwards, each answered with exactly its
own rows, the window honoured, failures reaching every caller of a batch, window 0 a direct call,
close() failing whoever still waits; and the real MiniLM classifier behind it answering batched
callers as it answers one direct call."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .classifier_fixtures import LABELS, TEXTS, embedding_artifact, images, image_head_artifact
from tunelab.serving.classify_backend import MicroBatcher, open_classifier
from tunelab.serving.errors import BadServingRequest, ServerUnavailable, ServingError


class StandIn:
    """A classifier stand-in: row i is (item id, item id * 2); each call takes `seconds` and is logged."""

    def __init__(self, seconds: float = 0.02, fail: bool = False):
        self.seconds, self.fail = seconds, fail
        self.calls: list[int] = []
        self.threads: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, items: list) -> np.ndarray:
        with self.lock:
            self.calls.append(len(items))
            self.threads.append(threading.get_ident())
        time.sleep(self.seconds)
        if self.fail:
            raise ValueError("the forward ran out of memory")
        return np.array([[x, 2 * x] for x in items], dtype=np.float64)


def call_together(batcher, payloads: list[list]) -> list:
    """Every payload sent from its own thread at once; the results (or exceptions) in order."""
    start = threading.Barrier(len(payloads))

    def one(items):
        start.wait()
        try:
            return batcher(items)
        except Exception as e:      # noqa: BLE001
            return e

    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(one, payloads))


def under_load(batcher, fn) -> None:
    """Bursts until a batch has gathered several requests: from then on the batcher waits its window."""
    while not fn.calls or fn.calls[-1] < 2:
        call_together(batcher, [[1], [2], [3]])


@pytest.mark.parametrize("concurrency", [1, 8, 32])
def test_each_caller_gets_exactly_its_own_rows(concurrency):
    fn = StandIn()
    batcher = MicroBatcher(fn, window_ms=50, max_batch=32)
    # Callers send 1 to 3 items each: the rows must be split back by each caller's own count.
    payloads = [[1000 * c + k for k in range(1 + c % 3)] for c in range(concurrency)]
    results = call_together(batcher, payloads)
    batcher.close()
    for items, got in zip(payloads, results):
        np.testing.assert_array_equal(got, [[x, 2 * x] for x in items])
    assert sum(fn.calls) == sum(len(p) for p in payloads) == batcher.stats["items"]
    assert batcher.stats["batches"] == len(fn.calls)
    if concurrency > 1:
        assert len(fn.calls) < concurrency / 2, fn.calls       # gathered into few forwards
    assert max(fn.calls) <= 32


def test_max_batch_closes_the_window_early():
    fn = StandIn(seconds=0.0)
    batcher = MicroBatcher(fn, window_ms=3000, max_batch=4)
    under_load(batcher, fn)
    fn.calls.clear()
    t0 = time.perf_counter()
    results = call_together(batcher, [[i] for i in range(4)])
    elapsed = time.perf_counter() - t0
    batcher.close()
    assert elapsed < 1.5, elapsed                   # did not wait out the 3 s window
    assert fn.calls == [4] and [r[0, 0] for r in results] == [0, 1, 2, 3]


@pytest.mark.parametrize("window_ms", [30, 120])
def test_under_load_a_request_waits_no_longer_than_the_window(window_ms):
    fn = StandIn(seconds=0.0)
    batcher = MicroBatcher(fn, window_ms=window_ms, max_batch=32)
    under_load(batcher, fn)
    t0 = time.perf_counter()
    batcher([42])
    elapsed = time.perf_counter() - t0
    batcher.close()
    assert window_ms / 1000 * 0.9 <= elapsed <= window_ms / 1000 + 0.25, elapsed


def test_light_traffic_pays_no_window():
    fn = StandIn(seconds=0.0)
    batcher = MicroBatcher(fn, window_ms=500, max_batch=32)
    t0 = time.perf_counter()
    for i in range(4):                                  # one request at a time: each goes at once
        assert batcher([i])[0, 0] == i
    elapsed = time.perf_counter() - t0
    batcher.close()
    assert elapsed < 0.4, elapsed
    assert fn.calls == [1, 1, 1, 1]


def test_a_caller_larger_than_max_batch_goes_whole_and_alone():
    fn = StandIn(seconds=0.0)
    batcher = MicroBatcher(fn, window_ms=20, max_batch=4)
    results = call_together(batcher, [list(range(10)), [100], [200]])
    batcher.close()
    assert results[0].shape == (10, 2) and results[1][0, 0] == 100 and results[2][0, 0] == 200
    assert 10 in fn.calls and max(c for c in fn.calls if c != 10) <= 4


def test_an_exception_reaches_every_caller_of_the_batch():
    fn = StandIn(fail=True)
    batcher = MicroBatcher(fn, window_ms=50, max_batch=32)
    results = call_together(batcher, [[i] for i in range(8)])
    assert all(isinstance(r, ValueError) and "out of memory" in str(r) for r in results), results
    # The batcher survives a failed batch.
    fn.fail = False
    np.testing.assert_array_equal(batcher([7]), [[7, 14]])
    batcher.close()


def test_a_wrong_number_of_rows_fails_the_batch_instead_of_misanswering():
    batcher = MicroBatcher(lambda items: np.zeros((len(items) + 1, 2)), window_ms=20)
    results = call_together(batcher, [[1], [2]])
    batcher.close()
    assert all(isinstance(r, ServingError) and re.search(r"returned \d+ rows for \d+ items", str(r))
               for r in results), results


def test_window_zero_calls_fn_directly_in_the_callers_thread():
    fn = StandIn(seconds=0.01)
    batcher = MicroBatcher(fn, window_ms=0)
    results = call_together(batcher, [[i] for i in range(6)])
    assert [r[0, 0] for r in results] == list(range(6))
    assert fn.calls == [1] * 6 and threading.get_ident() not in fn.threads
    assert len(set(fn.threads)) == 6                # each caller's own thread, no batcher thread
    assert batcher.stats == {"batches": 6, "items": 6}
    batcher.close()
    with pytest.raises(ServerUnavailable):
        batcher([1])


def test_close_fails_waiting_callers_and_lets_the_running_batch_finish():
    release = threading.Event()

    def slow(items):
        release.wait(10)
        return np.array([[x] for x in items])

    batcher = MicroBatcher(slow, window_ms=1, max_batch=1)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(batcher, [1])
        time.sleep(0.2)                              # the first batch is in the forward now
        waiting = pool.submit(batcher, [2])
        time.sleep(0.1)
        closing = pool.submit(batcher.close)
        with pytest.raises(ServerUnavailable, match="send the request again"):
            waiting.result(timeout=5)
        release.set()
        assert running.result(timeout=5).tolist() == [[1]]
        closing.result(timeout=5)
    with pytest.raises(ServerUnavailable):
        batcher([3])


# The real classifier behind the batcher.

@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    return embedding_artifact(tmp_path_factory.mktemp("emb") / "model")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.mark.parametrize("engine", ["torch", "onnx"])
@pytest.mark.parametrize("window_ms", [20, 0])
def test_concurrent_callers_get_what_one_direct_call_gives(text_model, engine, window_ms, work):
    backend = open_classifier(text_model, engine, work)
    assert backend.label_names == LABELS and backend.inputs == "text"
    direct = backend.predict_proba(TEXTS)
    batcher = MicroBatcher(backend.predict_proba, window_ms=window_ms, max_batch=32)
    # window 0: concurrent direct calls, which the backend serialises (its tokenizer is not reentrant).
    results = call_together(batcher, [[t] for t in TEXTS])
    batcher.close()
    assert not [r for r in results if isinstance(r, Exception)], results
    # Padded with other texts in one forward: equal up to float rounding.
    np.testing.assert_allclose(np.vstack(results), direct, atol=1e-5)
    if window_ms:
        assert batcher.stats["batches"] < len(TEXTS) / 2


def test_an_image_classifier_opens_with_image_inputs(tmp_path):
    backend = open_classifier(image_head_artifact(tmp_path / "img"), "torch")
    assert backend.inputs == "image"
    assert backend.predict_proba(images(3)).shape == (3, len(LABELS))
    assert backend.predict_proba([]).shape == (0, len(LABELS))


def test_a_generative_model_is_not_a_classifier(tmp_path):
    folder = tmp_path / "lm"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"kind": "causal-lm", "labels": []}')
    with pytest.raises(BadServingRequest, match="not a classifier"):
        open_classifier(folder, "torch")
