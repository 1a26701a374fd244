"""The small-data rules, unit by unit: early stopping that cannot fire on noise (and the loop
honouring it), the comparison's pruning bound, and a recommendation that says when two strategies
cannot be told apart. Tiny random models and synthetic rows: no quality claims here (those are
in tests/test_small_data_quality.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tunelab.engine.budget import Budget, BudgetError, parse_duration
from tunelab.engine.pruning import CandidateStopped, Guard, optimistic_reach
from tunelab.engine.recommend import recommend
from tunelab.strategies import task_named
from tunelab.training.progress import ProgressEvent
from tunelab.training.stopping import StoppingRule

from test_loop_plumbing import _split, _tiny_model

TEXT = task_named("text-classification")


def rule(val_rows, labels=8, min_steps=200, total=300, patience=2, every=15):
    return StoppingRule.for_run(metric_name="val_macro_f1", val_rows=val_rows, labels=labels, min_steps=min_steps,
                                total_steps=total, patience_evals=patience,
                                eval_every=every)


@pytest.mark.parametrize("val_rows, labels, select, signal", [
    (2, 2, False, "val_macro_f1"),        # a couple of rows: nothing to select on
    (7, 8, False, "val_macro_f1"),        # fewer rows than labels
    (8, 8, True, "val_loss"),             # a row a label: the loss, not macro-F1
    (79, 8, True, "val_loss"),
    (80, 8, True, "val_macro_f1"),        # 10 a label: macro-F1 is fine
    (1000, 77, True, "val_macro_f1"),
])
def test_signal_by_validation_size(val_rows, labels, select, signal):
    r = rule(val_rows, labels)
    assert (r.select, r.signal) == (select, signal)


def test_early_stopping_honours_the_minimum_steps():
    r = rule(100, 2, min_steps=200, total=300)
    # the best evaluation was at step 10; patience long exhausted, but fewer than 200 steps done
    assert not r.should_stop(150, best_step=10)
    assert r.should_stop(200, best_step=10)
    # patience is in steps, at least a fifth of the run
    assert r.patience_steps >= 60
    assert not r.should_stop(250, best_step=200)


def test_no_selection_never_stops():
    r = rule(3, 2)
    assert not any(r.should_stop(s, 0) for s in range(0, 10_000, 50))


def test_loss_improvement_must_beat_noise():
    r = rule(20, 8)
    assert r.on_loss
    assert r.improved(r.score(0.5, {"val_loss": 1.0}), None)
    assert not r.improved(r.score(0.9, {"val_loss": 0.99995}), best=-1.0)   # tiny gain: noise
    assert r.improved(r.score(0.1, {"val_loss": 0.9}), best=-1.0)


def test_loop_reaches_min_steps_on_tiny_data(tmp_path):
    """18 rows, 2 validation rows (a constant metric would have stopped it at step 3): the loop runs
    its whole min_steps schedule and keeps the final weights."""
    from tunelab.training.loop import LoopConfig, train_loop

    cfg = LoopConfig(epochs=3, min_steps=40, batch_size=32, checkpoint_every=1000)
    result = train_loop(_tiny_model(), _split(18), _split(2), cfg, tmp_path / "ckpt", pad_id=0)
    assert result.state.global_step == 40
    assert "too small" in result.stopping
    evaluations = [h for h in result.history if "val_macro_f1" in h]
    assert 1 <= len(evaluations) <= 21 and "val_loss" in evaluations[-1]


def test_loop_early_stops_only_after_min_steps(tmp_path):
    from tunelab.training.loop import LoopConfig, train_loop

    cfg = LoopConfig(epochs=1, min_steps=30, batch_size=8, checkpoint_every=1000, learning_rate=0.0)
    # learning rate 0: the validation loss never improves after the first evaluation
    result = train_loop(_tiny_model(), _split(64), _split(40), cfg, tmp_path / "ckpt", pad_id=0)
    assert result.state.global_step >= 30
    assert result.state.global_step < 8 * 30     # but it did stop early


# -- pruning ----------------------------------------------------------------------------------

def curve(*points):
    return [{"step": s, "metric": m, "interval": [lo, hi]} for s, m, lo, hi in points]


def test_optimistic_reach_adds_the_recent_gain():
    c = curve((50, 0.30, 0.20, 0.40), (100, 0.40, 0.30, 0.50))
    assert optimistic_reach(c, 200) == pytest.approx(0.50 + 0.002 * 100)
    flat = curve((50, 0.40, 0.30, 0.50), (100, 0.35, 0.25, 0.45))
    assert optimistic_reach(flat, 200) == pytest.approx(0.50)
    assert optimistic_reach([{"step": 1, "metric": 0.3, "interval": None}] * 2, 10) is None


def _guard(prune=True, deadline=None, best=0.9):
    finished = [{"strategy": "linear-probe", "quality": best}]
    return Guard("full", TEXT, finished, lambda e: None, prune=prune, deadline=deadline, budget=Budget(seconds=1))


def _eval(step, total, metric, lo, hi):
    return ProgressEvent("train", step, total, eval_metric=metric, eval_interval=[lo, hi])


def test_guard_stops_a_candidate_that_cannot_win():
    g = _guard()
    g(_eval(50, 200, 0.30, 0.20, 0.40))          # too early to judge
    with pytest.raises(CandidateStopped) as stopped:
        g(_eval(100, 200, 0.31, 0.22, 0.41))
    row = stopped.value.row()
    assert row["stopped"] and row["stopped_because"] == "cannot win" and len(row["curve"]) == 2
    assert "linear-probe" in row["reason"] and "100 of 200" in row["reason"]


@pytest.mark.parametrize("events", [
    [(50, 0.30, 0.20, 0.40), (100, 0.80, 0.70, 0.95)],   # its upper bound reaches the best
    [(20, 0.30, 0.20, 0.40), (40, 0.31, 0.22, 0.41)],    # under half the steps
    [(50, 0.10, 0.00, 0.20), (100, 0.60, 0.40, 0.80)],   # climbing fast: may still get there
])
def test_guard_lets_a_candidate_that_may_win_go_on(events):
    g = _guard()
    for step, m, lo, hi in events:
        g(_eval(step, 200, m, lo, hi))


def test_exhaustive_never_prunes_and_the_deadline_stops():
    g = _guard(prune=False)
    g(_eval(100, 200, 0.1, 0.0, 0.2))
    g(_eval(150, 200, 0.1, 0.0, 0.2))
    late = _guard(prune=False, deadline=0.0)
    with pytest.raises(CandidateStopped) as stopped:
        late(ProgressEvent("train", 3, 200, loss=1.0))
    assert stopped.value.why == "budget" and "budget" in stopped.value.reason


# -- recommendation -----------------------------------------------------------------------------

def row(name, quality, cost, interval=None, paired=None):
    r = {"strategy": name, "quality": quality, "cost_seconds": cost, "quality_interval": interval,
         "test_rows": 40}
    if paired is not None:
        r["_paired"] = paired
    return r


def test_cheaper_is_recommended_when_the_test_split_cannot_tell_them_apart():
    true = [0, 1] * 20
    a = [1 - t if i < 4 else t for i, t in enumerate(true)]      # 4 errors of 40
    b = [1 - t if i < 6 else t for i, t in enumerate(true)]      # the same 4, and 2 more
    best = row("full", 0.0, 100.0, paired={"true": true, "pred": a, "labels": 2})
    cheap = row("linear-probe", 0.0, 5.0, paired={"true": true, "pred": b, "labels": 2})
    diff = TEXT.difference(best, cheap)
    best["quality"], cheap["quality"] = 0.9, 0.9 - diff["difference"]
    assert diff["difference"] > TEXT.material and diff["interval"][0] <= 0
    pick, reason = recommend([cheap, best], TEXT)
    assert pick == "linear-probe" and "cannot be told apart" in reason and "cheaper" in reason


def test_a_clear_winner_is_still_recommended():
    true = [0, 1] * 500
    perfect = row("full", 1.0, 100.0, paired={"true": true, "pred": true, "labels": 2})
    half = row("zero-shot", 0.5, 1.0, paired={"true": true, "pred": [0] * 1000, "labels": 2})
    pick, reason = recommend([half, perfect], TEXT)
    assert pick == "full" and "cannot be told apart" not in reason


def test_intervals_decide_without_paired_predictions():
    pick, reason = recommend([row("a", 0.90, 50.0, [0.80, 0.97]), row("b", 0.84, 5.0, [0.72, 0.92])], TEXT)
    assert pick == "b" and "overlap" in reason
    pick, _ = recommend([row("a", 0.90, 50.0, [0.88, 0.92]), row("b", 0.80, 5.0, [0.78, 0.82])], TEXT)
    assert pick == "a"


# -- budget -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h30m", 5400), ("45", 45), (2.5, 2.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "10x", "m", "1e9", "8d", True])
def test_bad_durations(text):
    with pytest.raises(BudgetError):
        parse_duration(text)


def test_dollars_become_seconds_through_the_price_sheet(monkeypatch):
    monkeypatch.setenv("TUNELAB_BILLING_DEVICE", "cpu")
    from tunelab.billing.devices import detect
    detect.cache_clear()
    try:
        device, cores = detect()
        seconds = Budget(usd=0.04).limit_seconds()      # $0.04 = one core-hour at the sheet's price
        assert seconds == pytest.approx(3600 / cores)
        assert Budget(seconds=60, usd=100).limit_seconds() == 60
    finally:
        detect.cache_clear()


# -- the comparison's control flow, with strategies whose curve and cost the test sets -----------

class _Predictor:
    def __init__(self, names, right):
        self.label_names, self.right = names, right

    def predict_proba(self, texts):
        return np.array([[0.9, 0.1] if self.right else [0.1, 0.9] for _ in texts])


def _scripted(name, estimate_s, curve_points, right, sleep_s=0.0):
    """A strategy of the text task that reports `curve_points` (step, metric, lo, hi) out of 100 steps."""
    import time

    from tunelab.strategies.base import Params as BaseParams, StrategyBase
    from tunelab.training.preflight import Estimate

    class Scripted(StrategyBase):
        task = TEXT
        family = "fine-tune"
        summary = advice = "test"
        Params = type("P", (BaseParams,), {})

        def check(self, ctx):
            pass

        def estimate(self, ctx):
            return Estimate(1.0, estimate_s, {}, "scripted")

        def fit(self, ctx):
            for step, m, lo, hi in curve_points:
                time.sleep(sleep_s)
                ctx.progress(ProgressEvent("train", step, 100, loss=1.0))
                ctx.progress(ProgressEvent("train", step, 100, eval_metric=m, eval_interval=[lo, hi]))
            return _Predictor(ctx.splits.label_names, right)

    Scripted.name = name
    return Scripted


@pytest.fixture
def scripted_data(tmp_path):
    from tunelab.engine import DataSpec, prepare_data
    from tunelab.models import resolve_model

    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good text number {i},{'a' if i % 2 else 'b'}\n" for i in range(60)))
    return resolve_model("minilm"), prepare_data(DataSpec(f), resolve_model("minilm"))


@pytest.fixture
def registered():
    from tunelab.strategies.base import REGISTRY

    added = []

    def add(cls):
        REGISTRY[cls.name] = cls
        added.append(cls.name)
    yield add
    for name in added:
        REGISTRY.pop(name, None)


def test_compare_runs_cheapest_first_prunes_and_skips(scripted_data, registered):
    from tunelab.engine import Budget, compare

    model, data = scripted_data
    registered(_scripted("t-good", 1.0, [(50, 0.9, 0.8, 1.0)], right=True))
    registered(_scripted("t-loser", 5.0, [(50, 0.2, 0.1, 0.3), (60, 0.2, 0.1, 0.3), (100, 0.2, 0.1, 0.3)],
                         right=False))
    registered(_scripted("t-huge", 10_000.0, [(100, 0.9, 0.8, 1.0)], right=True))
    result = compare(model, data, ["t-huge", "t-loser", "t-good"], budget=Budget(seconds=600))
    rows = {r["strategy"]: r for r in result.results}
    assert result.order == ["t-good", "t-loser", "t-huge"]             # cheapest first
    assert rows["t-loser"]["stopped"] and rows["t-loser"]["stopped_because"] == "cannot win"
    assert [c["step"] for c in rows["t-loser"]["curve"]] == [50, 60]
    assert rows["t-huge"]["skipped"] and "budget" in rows["t-huge"]["reason"]
    assert result.recommended == "t-good"
    assert result.budget["limit_seconds"] == 600 and result.budget["spent_seconds"] < 600
    assert not any(k.startswith("_") for r in result.results for k in r)

    exhaustive = compare(model, data, ["t-loser", "t-good"], exhaustive=True)
    assert all("error" not in r for r in exhaustive.results)


def test_compare_stops_a_run_past_its_budget(scripted_data, registered):
    import time

    from tunelab.engine import Budget, compare

    model, data = scripted_data
    registered(_scripted("t-slow", 0.1, [(s, 0.5, 0.4, 0.6) for s in range(10, 101, 10)], right=True,
                         sleep_s=0.4))
    t0 = time.monotonic()
    result = compare(model, data, ["t-slow"], budget=Budget(seconds=1.0))
    row = result.results[0]
    assert row["stopped"] and row["stopped_because"] == "budget" and row["curve"]
    assert time.monotonic() - t0 < 3.0
    assert result.recommended is None


@pytest.mark.parametrize("val_rows, labels, trusted", [(2, 2, False), (40, 8, False), (80, 8, True)])
def test_only_a_validation_split_big_enough_can_stop_a_candidate(val_rows, labels, trusted, tmp_path):
    """The benchmark caught it: `full` on 16 rows was stopped on a 2-row validation split whose
    bootstrap "upper bound" of macro-F1 was 0.5. The loop reports no interval then, and the guard
    stops nothing without one."""
    assert rule(val_rows, labels).trusts_metric is trusted
    from tunelab.training.loop import LoopConfig, train_loop

    seen = []
    cfg = LoopConfig(epochs=2, batch_size=8, checkpoint_every=1000)
    train_loop(_tiny_model(), _split(16), _split(2), cfg, tmp_path / "c", pad_id=0, progress=seen.append)
    evals = [e for e in seen if e.eval_metric is not None]
    assert evals and all(e.eval_interval is None for e in evals)
