"""A run's quality metrics and a comparison's rows, as the API documents them.

On the wire they stay open JSON objects (a model's `metrics`, a comparison's `results`): the SDK
hands them over as dicts, as before, and a newer server may add keys. The document lists the keys
every client can rely on, among them each quality metric's uncertainty interval: `[low, high]`,
the 95% interval over the test rows the metric was measured on (a bootstrap over the rows for
macro-F1, accuracy and token F1; Wilson's score interval for preference accuracy), null for an
empty test split and absent from runs made before intervals. `RunMetrics.model_validate(m)` and
`ComparisonRow.model_validate(r)` give typed views."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from .base import Obj

Interval = Annotated[list[float], Field(min_length=2, max_length=2)]


def _interval(what: str) -> Any:
    return Field(None, description=f"[low, high]: the 95% interval of {what} over the rows it was measured "
                                   "on; null for an empty test split")


class Efficiency(Obj):
    """What the run's own compute did (its training steps, or its encoder passes for frozen-feature
    strategies): counted on every step, so every run has it unless it did no timed work (features
    read from the cache)."""
    phase: str | None = Field(None, description="training (forward + backward) or encoding (forward only)")
    rows: int | None = Field(None, description="sequences through the model (a pair counts 2)")
    tokens: int | None = Field(None, description="real tokens (padding excluded)")
    seconds: float | None = Field(None, description="the steps' own time: no evaluation or checkpoints")
    steps: int | None = None
    tokens_per_s: float | None = None
    samples_per_s: float | None = None
    step_p50_s: float | None = Field(None, description="median optimizer step time")
    step_p95_s: float | None = Field(None, description="95th percentile step time")
    precision: str | None = Field(None, description="fp32, bf16 or fp16: the matmul precision it ran in")
    model_flops: float | None = Field(None, description="the model's matmul FLOPs for that work (analytic "
                                      "count; padding and recomputation excluded)")
    achieved_gflops: float | None = None
    peak_gflops: float | None = Field(None, description="the measured matmul peak of that precision")
    peak_source: str | None = Field(None, description="the hardware benchmark it came from, or a live probe")
    mfu: float | None = Field(None, description="model FLOPs utilisation: achieved over peak (0-1)")
    work_memory_mb: float | None = Field(None, description="peak memory over the memory at the work's start")
    usd_per_million_tokens: float | None = Field(None, description="this machine's price for a million of "
                                                 "these tokens at this speed")


def _open_object(model: type[Obj]) -> WithJsonSchema:
    """The model's schema for a field that stays a dict in Python, written in place (a nested
    model's $ref would point into $defs that a WithJsonSchema schema does not carry)."""
    return WithJsonSchema(model.model_json_schema(mode="serialization"))


EfficiencyObject = Annotated[dict[str, Any], _open_object(Efficiency)]


class RunMetrics(Obj):
    """A finished run's metrics (the keys below, and more: per_class, confusion_matrix, timings...)."""
    task: str | None = Field(None, description="text-classification, chat or preference")
    test_rows: int | None = Field(None, description="held-out rows (pairs, conversations) scored")
    macro_f1: float | None = Field(None, description="classification: the quality a comparison ranks by")
    macro_f1_interval: Interval | None = _interval("macro-F1")
    accuracy: float | None = None
    accuracy_interval: Interval | None = _interval("accuracy")
    token_f1: float | None = Field(None, description="chat: token F1 of the held-out answers (the quality)")
    token_f1_interval: Interval | None = _interval("token F1 (over the answers scored)")
    exact_match: float | None = None
    exact_match_interval: Interval | None = _interval("exact match (Wilson)")
    answers_scored: int | None = Field(None, description="chat: held-out answers generated and scored")
    preference_accuracy: float | None = Field(None, description="preference: how often the tuned model "
                                              "prefers the chosen answer (the quality)")
    preference_accuracy_interval: Interval | None = _interval("preference accuracy (Wilson)")
    base_preference_accuracy_interval: Interval | None = _interval("the base model's preference accuracy")
    interval: dict[str, Any] | None = Field(None, description="how the intervals were made: level (0.95), "
                                            "method, resamples (bootstrap), rows")
    efficiency: EfficiencyObject | None = None
    mfu: float | None = Field(None, description="efficiency.mfu, at the top for scripts")
    tokens_per_second: float | None = None
    error_examples: list[dict[str, Any]] | None = Field(None, description="classification: a few misclassified "
                                                        "test rows, {text (truncated), true, predicted}, at most "
                                                        "3 a label and 30 in all. The service keeps them sealed with the tenant's key "
                                                        "(`error_examples_sealed` in a job's result); its web pages "
                                                        "show them")
    train_label_counts: dict[str, int] | None = Field(None, description="classification: training rows of "
                                                      "each label (after the split)")


class ComparisonRow(Obj):
    """One strategy's row of a comparison: its metrics in brief, or why it did not run."""
    strategy: str
    quality: float | None = Field(None, description="the task's ranking metric (macro-F1, token F1, "
                                  "preference accuracy)")
    quality_interval: Interval | None = _interval("the quality")
    cost_seconds: float | None = Field(None, description="compute: training, plus serving 10,000 predictions "
                                       "for classifiers")
    relative_cost: float | None = Field(None, description="cost over the cheapest finished strategy's")
    error: str | None = Field(None, description="why the strategy did not run or finish (no metrics then)")
    skipped: bool | None = Field(None, description="not started: its estimate did not fit what was left of "
                                 "the comparison's budget (`reason` says so)")
    stopped: bool | None = Field(None, description="stopped before its end: its learning curve could not "
                                 "reach the best, or the budget ran out (`stopped_because`, `reason`)")
    reason: str | None = Field(None, description="why it was skipped or stopped, in words")
    stopped_because: str | None = Field(None, description="`cannot win` or `budget`")
    curve: list[dict[str, Any]] | None = Field(None, description="a stopped candidate's validation curve: "
                                               "step, metric and its 95% interval at each evaluation")
    stopped_at_step: int | None = None
    planned_steps: int | None = None
    predicted_seconds: float | None = Field(None, description="pre-flight's estimate of its run")
    tokens_per_s: float | None = Field(None, description="its training (or encoding) throughput")
    mfu: float | None = Field(None, description="model FLOPs utilisation of that work (0-1)")
    usd_per_million_tokens: float | None = None
    in_words: dict[str, Any] | None = Field(None, description="classification: the results in a person's words "
                                            "(overall, lines per label, weakest labels with examples of their "
                                            "errors, needs, thin)")


MetricsObject = Annotated[dict[str, Any], _open_object(RunMetrics)]
ComparisonRowObject = Annotated[dict[str, Any], _open_object(ComparisonRow)]
