"""Pre-flight: memory predicted within ±30% of the measured peak; runs that would not fit are
refused before any work, with ways that fit; --auto-fit applies the cheapest."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli


@pytest.mark.slow      # two real training runs measured against the prediction: `make test-slow`
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_memory_prediction_within_30_percent_of_measured_peak_rss(banking_subset, tmp_path, strategy):
    train, test = banking_subset
    out = tmp_path / strategy
    r = run_cli("train", train, "--test", test, "--strategy", strategy, "--out", out, "--set", "epochs=1",
                "--set", "batch_size=64", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    predicted, measured = m["predicted_peak_mb"], m["peak_rss_mb"]
    assert abs(predicted - measured) / measured <= 0.30, (predicted, measured)
    assert m["predicted_seconds"] > 0


def long_texts(path):
    """50 texts of ~300 tokens (the fewest a run accepts: 10 test rows, data/minimums.py): every
    forward on CPU is as long as the model allows (256), so the activations are large whatever the
    batch size (the loop splits big batches into runs)."""
    words = "the quarterly report shows revenue growth in every region and margins held steady".split()
    rows = ["text,label"]
    for i in range(50):
        label = "up" if i % 2 else "down"
        rows.append(" ".join(words[(i + j) % len(words)] for j in range(300)) + f" {label} {i},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow      # texts at the model's maximum length, probed for real: `make test-slow`
def test_run_that_does_not_fit_is_refused_with_ways_that_fit(tmp_path):
    data = long_texts(tmp_path / "long.csv")
    # batch_size given: left to itself, the engine picks a small batch for 50 rows, which fits
    args = ["train", data, "--strategy", "full", "--out", tmp_path / "m", "--set", "epochs=1",
            "--set", "min_steps=0", "--set", "batch_size=32"]
    env = {"TUNELAB_MEMORY_LIMIT_MB": "2000"}
    r = run_cli(*args, env=env)
    assert r.returncode == 2, r.stderr
    assert "would need" in r.stderr and "Ways that fit" in r.stderr
    assert "gradient checkpointing" in r.stderr
    assert not (tmp_path / "m" / "checkpoints").exists()

    r = run_cli(*args, "--auto-fit", env=env)
    assert r.returncode == 0, r.stderr
    assert "auto-fit: gradient checkpointing" in r.stderr
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["params"]["gradient_checkpointing"] is True
    assert config["plan"]["estimate"]["peak_mb"] <= 2000
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["peak_rss_mb"] <= 2000


@pytest.mark.parametrize("stored, measures", [
    (None, True),                                                    # never measured
    (0.46, True),                                                    # an older file's bare number
    ({"seconds_per_text": 0.46, "at": 0}, True),                     # measured long ago
    ({"seconds_per_text": 0.003, "at": "now"}, False),               # measured today: reused
])
def test_encoder_throughput_is_remembered_for_a_day_only(tmp_path, monkeypatch, stored, measures):
    """One probe taken while the machine was busy (0.46 s a text, 190x too slow) must not price
    every later transfer run for good."""
    import time
    from types import SimpleNamespace

    import tunelab.models
    from tunelab.strategies import estimates

    calls = []
    monkeypatch.setattr(tunelab.models, "load_sentence_encoder", lambda path: object())
    monkeypatch.setattr(estimates, "time_steps", lambda step, repeats=1: calls.append(1) or 0.128)
    if stored is not None:
        entry = dict(stored, at=time.time()) if isinstance(stored, dict) and stored["at"] == "now" else stored
        (tmp_path / "throughput.json").write_text(json.dumps({"m:bf16": entry}))
    ctx = SimpleNamespace(cache_dir=tmp_path, precision="bf16", model=SimpleNamespace(path=tmp_path),
                          splits=SimpleNamespace(train=SimpleNamespace(texts=["a text"] * 64)))
    seconds = estimates._encode_seconds_per_text(ctx, "m")
    assert bool(calls) == measures
    assert seconds == (0.002 if measures else 0.003)
    assert estimates._encode_seconds_per_text(ctx, "m") == seconds and len(calls) <= 1   # then remembered
