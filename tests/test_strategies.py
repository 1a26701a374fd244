"""Every strategy trains and evaluates on real data with the real pretrained MiniLM."""

from __future__ import annotations

import time

import pytest

from tunelab.engine import compare
from tunelab.models import resolve_model
from tunelab.engine import DataSpec, prepare_data, run_strategy
from tunelab.strategies import ConfigError


@pytest.fixture(scope="module")
def banking(banking_subset):
    model = resolve_model("minilm")
    return model, prepare_data(DataSpec(*banking_subset), model)


ALL = ["zero-shot", "few-shot", "linear-probe", "full", "lora", "qlora"]
# `make test`: every strategy end to end on the real model and data, with the costly knobs turned
# down (pairs, steps); the quality claims of the defaults are the slow runs below.
QUICK = {"few-shot": {"max_pairs": 160}, "full": {"epochs": 1, "min_steps": 0},
         "lora": {"epochs": 1, "min_steps": 0}}


@pytest.fixture(scope="module")
def quick(banking, tmp_path_factory):
    model, data = banking
    out = tmp_path_factory.mktemp("quick")
    return compare(model, data, ALL, params=QUICK, out_root=out), out


@pytest.fixture(scope="module")
def comparison(banking, tmp_path_factory):
    """Every default, as a user gets it (`make test-slow`: ~4 min on 2 cores)."""
    model, data = banking
    out = tmp_path_factory.mktemp("compare")
    return compare(model, data, ALL, out_root=out), out


def by_name(comparison):
    return {r["strategy"]: r for r in comparison[0].results}


def test_split_uses_the_users_test_file(banking):
    _, data = banking
    assert data.splits.test_origin == "user"
    assert len(data.splits.test) == 400
    assert len(data.splits.label_names) == 10


@pytest.mark.parametrize("strategy", ["zero-shot", "few-shot", "linear-probe", "full", "lora"])
def test_every_strategy_trains_and_evaluates(quick, strategy):
    row = by_name(quick)[strategy]
    assert 0.0 <= row["macro_f1"] <= 1.0
    assert row["latency_ms"] > 0
    assert (quick[1] / strategy / "manifest.json").is_file()


def test_pretrained_features_learn_ten_intents(quick):
    # The real pretrained encoder on real data: the probe (defaults) and even one epoch of
    # fine-tuning clearly beat chance (0.1) and the probe matches its slow-run quality.
    rows = by_name(quick)
    assert rows["linear-probe"]["macro_f1"] >= 0.85, rows
    assert rows["full"]["macro_f1"] >= 0.3 and rows["lora"]["macro_f1"] >= 0.3, rows


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["linear-probe", "full", "lora"])
def test_trained_strategies_beat_zero_shot_widely(comparison, strategy):
    # These 10 intents have telling names, so zero-shot is strong (~0.84 macro-F1): "widely"
    # here means the strategies that learn from all the data at least halve its error.
    rows = by_name(comparison)
    assert 1 - rows[strategy]["macro_f1"] <= (1 - rows["zero-shot"]["macro_f1"]) / 2, rows


@pytest.mark.slow
def test_few_shot_beats_zero_shot_with_eight_examples_a_class(comparison):
    rows = by_name(comparison)
    assert rows["few-shot"]["macro_f1"] >= rows["zero-shot"]["macro_f1"] + 0.05, rows


@pytest.mark.slow
def test_quality_on_ten_intents(comparison):
    rows = by_name(comparison)
    assert rows["linear-probe"]["macro_f1"] >= 0.85, rows
    assert rows["full"]["macro_f1"] >= 0.85, rows
    assert rows["lora"]["macro_f1"] >= 0.80, rows


def test_trainable_parameters_reflect_the_strategy(quick):
    rows = by_name(quick)
    assert rows["zero-shot"]["trainable_params"] == 0
    assert rows["linear-probe"]["trainable_params"] == 10 * 384 + 10
    assert rows["lora"]["trainable_params"] < rows["full"]["trainable_params"] / 5


def test_recommendation_names_a_strategy_with_a_reason(quick):
    result = quick[0]
    assert result.recommended in by_name(quick)
    assert "macro-F1" in result.reason


def test_qlora_is_refused_without_cuda_before_any_work(banking, tmp_path):
    model, data = banking
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="CUDA"):
        run_strategy(model, data, "qlora", out=tmp_path / "q")
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "q").exists()


def test_compare_reports_qlora_refusal_in_its_table(quick):
    assert "CUDA" in by_name(quick)["qlora"]["error"]


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": 0}, "epochs"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"no_such_knob": 1}, "no_such_knob"),
    ({"max_length": 4096}, "max_length"),
    ({"target_modules": ["nonexistent_proj"]}, "do not exist"),
])
def test_bad_hyperparameters_are_refused_before_work(banking, overrides, message):
    model, data = banking
    with pytest.raises(ConfigError, match=message):
        run_strategy(model, data, "lora", overrides)
