"""What a run's compute did, in counts cheap enough to keep on every step: rows, tokens, the sum
of squared lengths (attention's share grows with it), and the wall time of each step. The
hardware layer turns them into FLOPs, tokens/s and MFU (hardware/efficiency.py)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import psutil


@dataclass
class WorkCounter:
    phase: str = "training"           # "training" (forward + backward) or "encoding" (forward only)
    rows: int = 0
    tokens: int = 0
    tokens_sq: int = 0
    seconds: float = 0.0              # the steps' own time: no evaluation, checkpoint or progress
    step_seconds: list[float] = field(default_factory=list)
    # this process's memory when the work began (model loaded): the peak over it is what the
    # training itself needs (activations, gradients, optimizer state), whatever the runtime weighs
    base_rss_mb: float | None = None

    def begin(self) -> "WorkCounter":
        self.base_rss_mb = psutil.Process().memory_info().rss / 2 ** 20
        return self

    def add(self, lengths) -> None:
        """Rows that went through the model (real lengths: padding is waste, not model work)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        self.rows += int(lengths.size)
        self.tokens += int(lengths.sum())
        self.tokens_sq += int((lengths * lengths).sum())

    def step(self, seconds: float) -> None:
        self.seconds += seconds
        self.step_seconds.append(seconds)

    @contextmanager
    def timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.step(time.perf_counter() - t0)

    def summary(self) -> dict:
        steps = np.asarray(self.step_seconds, dtype=np.float64)
        p50, p95 = (np.percentile(steps, [50, 95]).tolist() if steps.size else (None, None))
        return {"phase": self.phase, "rows": self.rows, "tokens": self.tokens, "tokens_sq": self.tokens_sq,
                "seconds": self.seconds, "steps": int(steps.size), "step_p50_s": p50, "step_p95_s": p95,
                "base_rss_mb": self.base_rss_mb}
