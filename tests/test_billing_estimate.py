"""The estimator's arithmetic, without a database: the hardware probe's factor and the range."""

from __future__ import annotations

import pytest

from tunelab.billing import estimate as est
from tunelab.billing.estimate import JobShape, estimate, raw_seconds


@pytest.mark.parametrize("probe_ms, expected", [
    (5.0, 1.0),          # the reference machine
    (4.1, 1.0),          # the probe's own noise on one machine: ignored
    (6.5, 1.0),
    (10.0, 2.0),         # a CPU without native bf16, or half the cores: twice the time
    (2.5, 0.5),          # a faster class of CPU
    (100.0, 5.0),        # clamped: a hint, the calibration corrects the rest
    (0.1, 0.2),
])
def test_cpu_speed_acts_on_hardware_class_only(monkeypatch, probe_ms, expected):
    monkeypatch.setattr(est, "cpu_probe_ms", lambda: probe_ms)
    assert est.cpu_speed({"probe_ms": 5.0}) == pytest.approx(expected)


def test_no_reference_probe_means_no_scaling(monkeypatch):
    monkeypatch.setattr(est, "cpu_probe_ms", lambda: 50.0)
    assert est.cpu_speed({}) == 1.0


def test_range_top_covers_a_run_that_never_stops_early_at_the_usual_speed_error(monkeypatch):
    monkeypatch.setattr(est, "cpu_probe_ms", lambda: 5.0)
    # 800 rows and min_steps 200: the loop runs 12 epochs, and early stopping never fires before
    # min_steps (training/stopping.py): the estimate expects all 12, and the top of the range
    # covers them on a slow day too.
    shape = JobShape("full", "minilm", 22_700_000, 800, None, 24.0, 3, {"epochs": 3, "min_steps": 200})
    e = estimate(None, [shape], device="cpu", units=2)
    most = raw_seconds(shape, "cpu", early_stopping=False)[0]
    assert e.compute_high_ms >= most * 1000 * (1 + e.spread) * 0.999
    assert e.compute_low_ms < e.compute_ms < e.compute_high_ms
    train = next(t for t in e.basis[0]["terms"] if t["term"] == "train")
    assert train["epochs"] == raw_seconds(shape, "cpu", early_stopping=False)[1][1]["epochs"] == 12
