"""What a dataset's length distribution does to compute: the padded cost per real token.

Two files with the same mean length cost differently when one has a long tail (an SMS file
with one 238-token text among 25-token ones): batches are padded to their longest text and
attention grows with the square of the length. The estimate rebuilds the job's lengths from the
dataset's stored token-length histogram, forms the batches the way the loop does
(training.batching, models.batch_shapes on CPU) and prices them with the same cost model
the loop plans with. The result is a factor (>= 1) on the tokens of each term.
"""

from __future__ import annotations

import numpy as np

from ..models.batch_shapes import inference_batches, run_cost, split_batch
from ..training.batching import epoch_batches

SIMULATED_ROWS = 20_000     # enough for the distribution; bounds the estimate's own cost


def lengths_from_histogram(histogram: dict | None, rows: int, cap: int) -> np.ndarray | None:
    """`rows` lengths at evenly spaced quantiles of the histogram (linear within a bin), capped
    at the model's maximum; None when there is no usable histogram."""
    if not histogram or not histogram.get("counts") or rows <= 0:
        return None
    edges = np.asarray(histogram["bins"], dtype=float)
    counts = np.asarray(histogram["counts"], dtype=float)
    if len(edges) != len(counts) + 1 or counts.sum() <= 0:
        return None
    n = min(rows, SIMULATED_ROWS)
    cdf = np.cumsum(counts) / counts.sum()
    q = (np.arange(n) + 0.5) / n
    b = np.minimum(np.searchsorted(cdf, q), len(counts) - 1)
    below = np.concatenate([[0.0], cdf[:-1]])[b]
    within = (q - below) / np.maximum(cdf[b] - below, 1e-12)
    lengths = edges[b] + within * (edges[b + 1] - edges[b])
    return np.clip(np.round(lengths), 1, cap).astype(np.int64)


def padding_factor(lengths: np.ndarray | None, batch_size: int, device: str, training: bool) -> float:
    """Cost of the batches, in run_cost's token units on CPU (padding, attention, per-forward cost)
    or padded tokens on a GPU, per real token. 1.0 without lengths."""
    if lengths is None or len(lengths) == 0:
        return 1.0
    cpu = device.split(":")[0] == "cpu"
    if training:
        batches = epoch_batches(lengths, batch_size, 0, 0)
        runs = [r for b in batches for r in split_batch(b, lengths)] if cpu else batches
    else:
        runs = inference_batches(lengths, batch_size, device.split(":")[0])
    if cpu:
        cost = sum(run_cost(len(r), int(lengths[r].max())) for r in runs)
    else:
        cost = sum(len(r) * int(lengths[r].max()) for r in runs)
    return max(float(cost) / float(lengths.sum()), 1.0)
