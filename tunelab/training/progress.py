"""Progress events: one shape for the CLI's progress bar now and the UI's live charts later."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol


@dataclass
class ProgressEvent:
    phase: str                      # "encode" | "train" | "eval" | "predict" | ...
    step: int
    total_steps: int
    epoch: float = 0.0
    loss: float | None = None
    eval_metric: float | None = None
    eval_loss: float | None = None  # held-out loss where the task has one (causal LMs)
    eval_interval: list | None = None   # [low, high] of eval_metric where the task gives one
    samples_per_s: float | None = None
    eta_s: float | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}


class ProgressCallback(Protocol):
    def __call__(self, event: ProgressEvent) -> None: ...


def null_progress(event: ProgressEvent) -> None:
    pass


class Throughput:
    """Samples/s and ETA over the work done so far in this process (resumed steps excluded)."""

    def __init__(self, total_steps: int, start_step: int = 0):
        self.total, self.start_step, self.t0, self.samples = total_steps, start_step, time.perf_counter(), 0

    def update(self, step: int, samples: int) -> tuple[float, float]:
        self.samples += samples
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        done = max(step - self.start_step, 1)
        return self.samples / elapsed, elapsed / done * (self.total - step)


class PhaseEta:
    """Fills in the ETA of events that come without one (encoding texts, predicting, evaluating):
    the rate of this phase so far, from its first event, applied to what is left. A long step of
    any strategy then shows an ETA, not only the training loops that compute their own."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock, self.start = clock, {}       # (phase, total) -> (time, step) of its first event

    def __call__(self, event: ProgressEvent) -> ProgressEvent:
        if event.phase == "checkpoint" or not event.total_steps:
            return event
        now, key = self.clock(), (event.phase, event.total_steps)
        t0, s0 = self.start.setdefault(key, (now, event.step))
        if event.eta_s is None and s0 <= event.step < event.total_steps and event.step > s0 and now > t0:
            event.eta_s = round((now - t0) / (event.step - s0) * (event.total_steps - event.step), 1)
        elif event.eta_s is None and event.step >= event.total_steps:
            event.eta_s = 0.0
        return event


class TqdmProgress:
    """Renders events as tqdm bars, one bar per phase; used by the CLI."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bars = enabled, {}

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled or event.phase == "checkpoint":   # a marker, not a phase with a bar
            return
        from tqdm import tqdm

        bar = self.bars.get(event.phase)
        if bar is None or bar.total != event.total_steps:
            if bar is not None:
                bar.close()
            bar = self.bars[event.phase] = tqdm(total=event.total_steps, desc=event.phase,
                                                initial=event.step, leave=False, dynamic_ncols=True)
        bar.n = event.step
        post = {}
        if event.loss is not None:
            post["loss"] = f"{event.loss:.4f}"
        if event.eval_metric is not None:
            post["val_f1"] = f"{event.eval_metric:.3f}"
        if event.samples_per_s is not None:
            post["samples/s"] = f"{event.samples_per_s:.0f}"
        bar.set_postfix(post, refresh=False)
        bar.refresh()
        if event.step >= event.total_steps:
            bar.close()
            del self.bars[event.phase]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


ProgressFn = Callable[[ProgressEvent], None]
