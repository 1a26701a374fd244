"""When a training run stops early and which weights it keeps: a rule that cannot fire on noise.

Early stopping on macro-F1 of a validation split of 8 rows ended `full` fine-tuning of MiniLM on
~70 legal clauses after a few steps, at 0.275 macro-F1 against the probe's 0.838: one wrong row
moves macro-F1 on 8 rows by a third. So:

- the run never stops before `min_steps` optimizer steps (small data gets more epochs to reach
  them), and patience is counted in steps scaled to the run (a fifth of it, at least the
  configured number of evaluations), not in epochs that may be one step long;
- on a small validation split the signal is the held-out loss (continuous: every row moves it a
  little) instead of macro-F1 (a step function of a handful of rows);
- below a few rows a label the split is too small to choose anything on: no early stopping, no
  "best" checkpoint, the full schedule's final weights.

Causal LMs already select on held-out loss; their task's metric is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

# Validation rows a label (on average) below which macro-F1 is too coarse to select on: the
# held-out loss is used instead.
LOSS_BELOW_ROWS_PER_LABEL = 10
# Below this many validation rows, or one a label, nothing is selected on validation at all.
NO_SELECTION_BELOW_ROWS = 8
# An improvement smaller than this (relative, on the loss) is noise, not progress.
MIN_RELATIVE_GAIN = 1e-3


@dataclass(frozen=True)
class StoppingRule:
    select: bool                 # early stopping and best-checkpoint selection on validation
    signal: str                  # what it follows: the task's metric, or "val_loss"
    on_loss: bool                # follows a classifier's held-out loss instead of its metric
    min_steps: int               # never stops before this many optimizer steps
    patience_steps: int          # steps since the best evaluation before it stops

    @classmethod
    def for_run(cls, *, metric_name: str, val_rows: int, labels: int | None, min_steps: int,
                total_steps: int, patience_evals: int,
                eval_every: int) -> "StoppingRule":
        """labels: the classifier's label count (None: not a classifier; its metric is kept)."""
        if val_rows < NO_SELECTION_BELOW_ROWS or (labels and val_rows < labels):
            return cls(False, metric_name, False, total_steps, total_steps)
        on_loss = bool(labels) and val_rows < LOSS_BELOW_ROWS_PER_LABEL * labels
        patience = max(patience_evals * max(eval_every, 1), total_steps // 5, 1)
        return cls(True, "val_loss" if on_loss else metric_name, on_loss, min(min_steps, total_steps), patience)

    def score(self, metric: float, values: dict) -> float:
        """Higher is better: the task's metric (already so), or the negated held-out loss."""
        return -float(values["val_loss"]) if self.on_loss else float(metric)

    def improved(self, score: float, best: float | None) -> bool:
        if best is None:
            return True
        return score > best + (MIN_RELATIVE_GAIN * abs(best) if self.on_loss else 0.0)

    @property
    def trusts_metric(self) -> bool:
        """The validation metric itself is informative (enough rows a label): a comparison may
        judge the run by it."""
        return self.select and not self.on_loss

    def should_stop(self, step: int, best_step: int) -> bool:
        return self.select and step >= self.min_steps and step - best_step >= self.patience_steps

    def describe(self) -> str:
        if not self.select:
            return "validation split too small to select on: trained the full schedule, final weights kept"
        return (f"early stopping on {self.signal} after {self.min_steps}+ steps, patience "
                f"{self.patience_steps} steps; best evaluation's weights kept")
