"""Stopping a comparison's candidate that cannot win, or that runs past the budget.

The guard is the candidate's progress callback: it forwards every event and watches two things.
- The learning curve (validation metric at each evaluation, with its interval, which the
  training loop reports): once half the planned steps are done, a candidate whose best upper
  bound so far, plus its recent rate of gain carried over the remaining steps, stays below the
  best finished strategy's quality minus the task's material difference cannot come within reach
  of it; going on would only spend compute.
- The clock: past the budget's deadline the candidate is stopped at its next event.
Raising from the progress callback ends the strategy's fit where it is (nothing is written).
"""

from __future__ import annotations

import time

from ..training.progress import ProgressEvent, ProgressFn

MIN_FRACTION = 0.5       # of the planned steps before the curve may stop a candidate
MIN_EVALUATIONS = 2


class CandidateStopped(Exception):
    def __init__(self, strategy: str, reason: str, curve: list[dict], step: int, total: int, why: str):
        super().__init__(reason)
        self.strategy, self.reason, self.curve, self.step, self.total, self.why = \
            strategy, reason, curve, step, total, why

    def row(self) -> dict:
        return {"strategy": self.strategy, "error": self.reason, "stopped": True, "reason": self.reason,
                "stopped_because": self.why, "curve": self.curve, "stopped_at_step": self.step,
                "planned_steps": self.total}


class Guard:
    def __init__(self, strategy: str, task, finished: list[dict], forward: ProgressFn, *, prune: bool,
                 deadline: float | None, budget=None):
        self.strategy, self.task, self.forward = strategy, task, forward
        self.prune, self.deadline, self.budget = prune, deadline, budget
        best = max(finished, key=lambda r: r["quality"], default=None)
        self.best_name = best["strategy"] if best else None
        self.target = best["quality"] - task.material if best else None
        self.curve: list[dict] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.forward(event)
        if event.phase != "train":
            return
        if event.eval_metric is not None:
            self.curve.append({"step": event.step, "metric": round(event.eval_metric, 4),
                               "interval": event.eval_interval})
            if self.prune:
                self._check_curve(event)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self._stop(event, "budget", f"stopped: the budget ({self.budget.describe()}) ran out at step "
                                        f"{event.step} of {event.total_steps}")

    def _check_curve(self, event: ProgressEvent) -> None:
        if self.target is None or len(self.curve) < MIN_EVALUATIONS or not event.total_steps:
            return
        if event.step < MIN_FRACTION * event.total_steps or event.step >= event.total_steps:
            return
        reach = optimistic_reach(self.curve, event.total_steps)
        if reach is not None and reach < self.target:
            last = self.curve[-1]
            lo_hi = f" ({last['interval'][0]:.2f}–{last['interval'][1]:.2f})" if last.get("interval") else ""
            self._stop(event, "cannot win",
                       f"stopped early: after {event.step} of {event.total_steps} steps its validation "
                       f"{self.task.quality_label} is {last['metric']:.3f}{lo_hi}; even its upper bound at its "
                       f"recent rate of gain (~{reach:.3f}) stays below {self.best_name}'s "
                       f"{self.target + self.task.material:.3f} minus {self.task.material:.2f}")

    def _stop(self, event: ProgressEvent, why: str, reason: str) -> None:
        raise CandidateStopped(self.strategy, reason, self.curve, event.step, event.total_steps, why)


def optimistic_reach(curve: list[dict], total_steps: int) -> float | None:
    """The most the metric can plausibly reach by the end: the best upper bound so far plus the
    last evaluations' gain per step (when positive) carried over the steps left. None without
    intervals (nothing is stopped on a bare number)."""
    uppers = [c["interval"][1] for c in curve if c.get("interval")]
    if not uppers:
        return None
    a, b = curve[-2], curve[-1]
    rate = max(0.0, (b["metric"] - a["metric"]) / max(b["step"] - a["step"], 1))
    return max(uppers) + rate * (total_steps - b["step"])
