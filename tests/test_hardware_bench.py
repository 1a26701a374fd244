"""The hardware benchmark: real measurements of this machine, stored and compared with the last
run (a 20% slower machine is flagged), and `tunelab bench hardware --quick` end to end."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunelab.engine.sweep import measure, plan_rows
from tunelab.hardware import store
from tunelab.hardware.efficiency import efficiency

REPO = Path(__file__).resolve().parents[1]
FIGURES = {"matmul_fp32", "matmul_bf16", "memory_bandwidth", "disk_read"}


def _result(scale: float = 1.0, step: float = 0.2) -> dict:
    return {"device": {"kind": "cpu"}, "quick": True,
            "figures": [{"name": "matmul_fp32", "median": 100.0 * scale, "higher_is_better": True},
                        {"name": "disk_read", "median": 1000.0 * scale, "higher_is_better": True},
                        {"name": "step_time", "median": step, "higher_is_better": False}],
            "models": [{"model": "minilm", "strategy": "full", "tokens_per_s": 2000.0 * scale}]}


@pytest.mark.parametrize("scale, step, flagged", [
    (0.80, 0.2, {"matmul_fp32", "disk_read", "minilm/full tokens/s"}),   # 20% slower: flagged
    (0.90, 0.2, set()),                                                  # 10%: within the noise allowed
    (1.30, 0.2, set()),                                                  # faster is never a regression
    (1.00, 0.24, {"step_time"}),                                         # a time 20% longer
])
def test_a_run_is_compared_with_the_previous_one(tmp_path, scale, step, flagged):
    store.save({**_result(), "id": "a", "created": "2026-12-01T00:00:00+00:00", "worker": "w"}, tmp_path)
    path = store.save({**_result(scale, step), "id": "b", "created": "2026-12-02T00:00:00+00:00",
                       "worker": "w"}, tmp_path)
    cmp = json.loads(path.read_text())["comparison"]
    assert cmp["against"] == "a" and set(cmp["regressions"]) == flagged
    assert [r["id"] for r in store.history("w", tmp_path)] == ["a", "b"]
    assert store.latest("w", tmp_path)["id"] == "b"


def test_history_skips_unreadable_files_and_first_runs_compare_with_nothing(tmp_path):
    path = store.save({**_result(), "worker": "w"}, tmp_path)
    assert json.loads(path.read_text())["comparison"] is None
    (path.parent / "broken.json").write_text("{not json")
    assert len(store.history("w", tmp_path)) == 1


def test_device_figures_are_measured_stored_and_compared(tmp_path):
    """The probes on this machine (no model rows: the CLI test below runs them): each figure a
    positive median with its spread; the second run is compared with the first."""
    t0 = time.perf_counter()
    first = measure(quick=True, home=tmp_path, rows=[])
    second = measure(quick=True, home=tmp_path, rows=[])
    assert time.perf_counter() - t0 < 60
    figures = {f["name"]: f for f in first["figures"]}
    assert FIGURES <= set(figures)
    assert all(f["median"] > 0 and f["spread"] >= 0 and f["runs"] >= 3 for f in figures.values())
    assert first["device"]["cores"] >= 1 and first["device"]["torch"]
    assert first["comparison"] is None and second["comparison"]["against"] == first["id"]
    assert {c["name"] for c in second["comparison"]["changes"]} >= FIGURES


def test_the_quick_sweep_is_the_default_model_and_its_quick_strategies():
    rows = plan_rows(quick=True)
    assert rows and {m for m, _ in rows} == {"minilm"}
    assert {"full", "lora", "linear-probe"} <= {s for _, s in rows}


@pytest.mark.parametrize("work, peak, mfu", [
    ({"rows": 64, "tokens": 1280, "tokens_sq": 25600, "seconds": 2.0, "base_rss_mb": 500.0}, (100.0, "probe"), 0.5),
    ({"rows": 64, "tokens": 1280, "tokens_sq": 25600, "seconds": 2.0}, None, None),
    ({"rows": 0, "tokens": 0, "tokens_sq": 0, "seconds": 0.0}, (100.0, "probe"), "none"),
])
def test_efficiency_from_counts(work, peak, mfu):
    eff = efficiency(work, 100e9, peak, "no", peak_rss_mb=800.0)
    if mfu == "none":
        assert eff is None          # no timed work (features from the cache): nothing to report
        return
    assert eff["tokens_per_s"] == 640 and eff["samples_per_s"] == 32 and eff["precision"] == "fp32"
    assert eff["achieved_gflops"] == 50 and eff["mfu"] == mfu
    assert eff["work_memory_mb"] == (300.0 if "base_rss_mb" in work else None)


@pytest.mark.slow
def test_cli_quick_bench_under_two_minutes_then_flags_a_slower_machine(tmp_path):
    env = {**os.environ, "TUNELAB_HOME": str(tmp_path), "TUNELAB_WORKER_NAME": "bench-test"}
    cmd = [sys.executable, "-m", "tunelab", "bench", "hardware", "--quick", "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    first = json.loads(out.stdout)
    assert seconds < 120, seconds
    models = {m["strategy"]: m for m in first["models"]}
    for name in ("full", "lora", "linear-probe"):
        m = models[name]
        assert m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1.5 and m["peak_mb"] > 0, m
    # The stored run, made 30% faster, as if this machine had been faster last time.
    path = Path(first["path"])
    faster = copy.deepcopy(json.loads(path.read_text()))
    for f in faster["figures"]:
        f["median"] *= 1.3
    for m in faster["models"]:
        m["tokens_per_s"] = (m.get("tokens_per_s") or 0) * 1.3
    path.write_text(json.dumps(faster))
    again = subprocess.run([*cmd[:-1], "--fail-on-regression"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 6, again.stdout[-2000:] + again.stderr[-2000:]
    assert "REGRESSION" in again.stdout and "matmul" in again.stdout


def test_the_estimator_speed_comes_from_the_stored_benchmark(tmp_path, monkeypatch):
    """The billing estimator's speed probe: this worker's latest benchmark figure when there is one
    (the median of many runs), not a one-off measurement in each process."""
    from tunelab.billing import devices
    from tunelab.settings import get_settings

    monkeypatch.delenv("TUNELAB_BILLING_CPU_PROBE_MS", raising=False)
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path))
    monkeypatch.setenv("TUNELAB_WORKER_NAME", "probe-test")
    get_settings.cache_clear()
    devices.cpu_probe_ms.cache_clear()
    try:
        live = devices.cpu_probe_ms()
        assert 0 < live < 1000
        store.save({"figures": [{"name": devices.PROBE_FIGURE, "median": 7.5, "higher_is_better": False}],
                    "models": []})
        devices.cpu_probe_ms.cache_clear()
        assert devices.cpu_probe_ms() == 7.5
    finally:
        get_settings.cache_clear()
        devices.cpu_probe_ms.cache_clear()


def test_the_cli_comparison_table_shows_throughput_and_mfu():
    from tunelab.cli.commands import render_table
    from tunelab.strategies import task_named

    task = task_named("text-classification")
    base = {"macro_f1": 0.9, "accuracy": 0.9, "train_seconds": 10.0, "latency_ms": 2.0, "trainable_params": 10,
            "cost_seconds": 12.0, "relative_cost": 1.0}
    table = render_table([{**base, "strategy": "full", "tokens_per_s": 2400.4, "mfu": 0.44},
                          {**base, "strategy": "zero-shot", "tokens_per_s": None, "mfu": None}], task.columns)
    assert "tokens/s" in table and "2,400" in table and "44%" in table and "MFU:" in table
    # rows from before efficiency was recorded: the table is as it was
    assert "MFU" not in render_table([{**base, "strategy": "full"}], task.columns)
