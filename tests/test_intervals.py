"""Every quality metric carries an uncertainty interval over its test rows: the vectorised bootstrap
equals a direct one (a loop over sklearn on the same resampled rows), Wilson matches published
values, an empty split has no interval, the intervals cover the truth about as often as they say,
and people see them (CLI table, headline, model card, web cells) while older runs still render."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from tunelab.evaluation.intervals import (format_short, format_with_interval, macro_f1_accuracy_intervals,
                                          mean_interval, paired_difference_interval, percentile_bounds,
                                          resample_indices, wilson_interval)


def synthetic(n: int, k: int, accuracy: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    return true, np.where(rng.random(n) < accuracy, true, rng.integers(0, k, n))


def direct(true, pred, k, resamples, seed):
    """The bootstrap written plainly: sklearn on each resample of the same indices."""
    f1s, accs = [], []
    for idx in np.concatenate(list(resample_indices(len(true), resamples, seed))):
        f1s.append(f1_score(true[idx], pred[idx], labels=list(range(k)), average="macro", zero_division=0))
        accs.append(accuracy_score(true[idx], pred[idx]))
    return percentile_bounds(np.array(f1s)), percentile_bounds(np.array(accs))


@pytest.mark.parametrize("n, k, accuracy, resamples, seed", [
    (20, 2, 0.9, 200, 0),          # a tiny split: resamples miss a class entirely (its F1 counts as 0)
    (60, 5, 0.7, 200, 3),
    (150, 12, 0.5, 100, 7),        # more labels than some resamples hold
    (40, 3, 1.0, 100, 1),          # perfect predictions
])
def test_vectorised_bootstrap_equals_a_direct_one(n, k, accuracy, resamples, seed):
    true, pred = synthetic(n, k, accuracy, seed)
    out = macro_f1_accuracy_intervals(true, pred, k, resamples=resamples, seed=seed)
    f1_iv, acc_iv = direct(true, pred, k, resamples, seed)
    assert out["macro_f1_interval"] == pytest.approx(f1_iv, abs=1e-9)
    assert out["accuracy_interval"] == pytest.approx(acc_iv, abs=1e-9)
    assert out["interval"] == {"level": 0.95, "method": "bootstrap over test rows", "resamples": resamples, "rows": n}


def test_labels_the_model_does_not_know_count_as_misses_outside_the_average():
    true, pred = synthetic(80, 4, 0.8)
    true[:5] = 4                    # a test label outside labels=range(4)
    out = macro_f1_accuracy_intervals(true, pred, 4, resamples=50)
    f1_iv, acc_iv = direct(true, pred, 4, 50, 0)
    assert out["macro_f1_interval"] == pytest.approx(f1_iv, abs=1e-9)
    assert out["accuracy_interval"] == pytest.approx(acc_iv, abs=1e-9)


def test_deterministic_chunked_and_fast():
    true, pred = synthetic(3000, 10, 0.8)
    macro_f1_accuracy_intervals(true[:10], pred[:10], 10)      # warm up numpy
    t0 = time.perf_counter()
    first = macro_f1_accuracy_intervals(true, pred, 10)
    assert time.perf_counter() - t0 < 1.5          # < 0.5 s alone; 2 busy shared cores here
    assert macro_f1_accuracy_intervals(true, pred, 10) == first
    assert macro_f1_accuracy_intervals(true, pred, 10, seed=1) != first
    # chunks: 2M index cells each, so 3,000 rows take 667 resamples a chunk; all 1,000 are drawn
    assert [c.shape for c in resample_indices(3000)] == [(666, 3000), (334, 3000)]
    lo, hi = first["macro_f1_interval"]
    point = f1_score(true, pred, average="macro")
    assert lo < point < hi and hi - lo < 0.05


@pytest.mark.parametrize("successes, n, expected", [
    # Wilson (1927), as scipy's binomtest(k, n).proportion_ci(method="wilson") and statsmodels give them
    (8, 10, (0.4901625, 0.9433178)),
    (0, 10, (0.0, 0.2775328)),
    (10, 10, (0.7224672, 1.0)),
    (81, 263, (0.2552885, 0.3662096)),
    (1, 1, (0.2065493, 1.0)),
])
def test_wilson_matches_known_values(successes, n, expected):
    assert wilson_interval(successes, n) == pytest.approx(list(expected), abs=1e-6)


def test_wilson_level():
    lo90, hi90 = wilson_interval(30, 50, level=0.90)
    lo95, hi95 = wilson_interval(30, 50)
    assert lo95 < lo90 < 0.6 < hi90 < hi95


@pytest.mark.parametrize("call", [
    lambda: macro_f1_accuracy_intervals([], [], 3)["macro_f1_interval"],
    lambda: macro_f1_accuracy_intervals([], [], 3)["accuracy_interval"],
    lambda: mean_interval([]),
    lambda: wilson_interval(0, 0),
    lambda: paired_difference_interval([], [], [], 3)["interval"],
])
def test_an_empty_split_has_no_interval(call):
    assert call() is None


def test_mean_interval_is_a_bootstrap_of_the_mean():
    scores = np.random.default_rng(0).random(40)
    means = [scores[idx].mean() for idx in np.concatenate(list(resample_indices(40, 300, 5)))]
    assert mean_interval(scores, resamples=300, seed=5) == pytest.approx(percentile_bounds(np.array(means)), abs=1e-12)
    assert mean_interval([0.5] * 7) == [0.5, 0.5]


def test_paired_difference_uses_the_same_rows_for_both():
    true, better = synthetic(300, 4, 0.9, seed=2)
    worse = np.where(np.random.default_rng(9).random(300) < 0.75, better, (better + 1) % 4)
    out = paired_difference_interval(true, better, worse, 4, resamples=200, seed=4)
    idx_all = np.concatenate(list(resample_indices(300, 200, 4)))
    labels = list(range(4))
    diffs = [f1_score(true[i], better[i], labels=labels, average="macro", zero_division=0)
             - f1_score(true[i], worse[i], labels=labels, average="macro", zero_division=0) for i in idx_all]
    assert out["interval"] == pytest.approx(percentile_bounds(np.array(diffs)), abs=1e-9)
    assert out["difference"] == pytest.approx(f1_score(true, better, average="macro")
                                              - f1_score(true, worse, average="macro"), abs=1e-12)
    assert 0 < out["interval"][0] < out["difference"] < out["interval"][1]     # clearly better
    same = paired_difference_interval(true, better, better, 4, resamples=50)
    assert same["difference"] == 0 and same["interval"] == [0.0, 0.0]


def test_coverage_on_a_synthetic_task():
    # 200 test splits of 200 rows from a classifier whose accuracy is 0.8: the 95% interval holds
    # the true accuracy in about 95% of them (a percentile bootstrap runs a little under).
    rng = np.random.default_rng(11)
    covered = 0
    for trial in range(200):
        true = rng.integers(0, 3, 200)
        pred = np.where(rng.random(200) < 0.8, true, (true + 1) % 3)
        lo, hi = macro_f1_accuracy_intervals(true, pred, 3, resamples=300, seed=trial)["accuracy_interval"]
        covered += lo <= 0.8 <= hi
    assert 0.88 <= covered / 200 <= 0.99


@pytest.mark.parametrize("args, expected", [
    ((0.95, [0.861, 0.99], 20), "0.950 (0.861–0.990) on 20 test rows"),
    ((0.95, [0.861, 0.99]), "0.950 (0.861–0.990)"),
    ((0.95, None, 20), "0.950"),                  # a run made before intervals: the value alone
    ((None, None), "—"),
    ((0.5, [0.25, 0.75], 1234, "held-out answers"), "0.500 (0.250–0.750) on 1,234 held-out answers"),
])
def test_format_with_interval(args, expected):
    assert format_with_interval(*args) == expected


def test_format_short():
    assert format_short(0.95, [0.861, 0.99]) == "0.950 (0.86–0.99)"
    assert format_short(0.95, None) == "0.950"


# -- shown to people -------------------------------------------------------------------------------

CLASSIFIER = {"macro_f1": 0.9, "accuracy": 0.92, "train_seconds": 1.0, "latency_ms_per_example": 0.5,
              "trainable_params": 10, "peak_rss_mb": 100.0, "test_rows": 20,
              "macro_f1_interval": [0.8, 0.97], "accuracy_interval": [0.85, 0.98],
              "interval": {"level": 0.95, "method": "bootstrap over test rows", "resamples": 1000, "rows": 20}}
OLD = {k: v for k, v in CLASSIFIER.items() if "interval" not in k}


def test_classification_rows_headline_and_table_show_the_interval():
    from tunelab.cli.commands import render_table
    from tunelab.strategies import task_named

    task = task_named("text-classification")
    row = task.summarize("linear-probe", CLASSIFIER)
    assert row["quality_interval"] == [0.8, 0.97] and row["macro_f1_interval"] == [0.8, 0.97]
    assert "macro-F1 0.900 (0.800–0.970) on 20 test rows" in task.headline("linear-probe", CLASSIFIER)
    assert "macro-F1 0.900 on 20 test rows; trained" in task.headline("linear-probe", OLD)
    old_row = task.summarize("zero-shot", OLD)
    assert old_row["quality_interval"] is None
    table = render_table([dict(row, relative_cost=1.0), dict(old_row, relative_cost=1.0),
                          {"strategy": "qlora", "error": "needs CUDA"}], task.columns)
    assert "0.900 (0.80–0.97)" in table and "0.920 (0.85–0.98)" in table and "0.900  " in table
    assert "95% interval" in table and "not run: needs CUDA" in table


def test_generative_rows_carry_their_quality_interval():
    from tunelab.strategies import task_named

    chat = {"token_f1": 0.4, "token_f1_interval": [0.3, 0.5], "train_seconds": 2.0, "peak_rss_mb": 1.0,
            "test_rows": 9, "answers_scored": 9}
    row = task_named("chat").summarize("sft-lora", chat)
    assert row["quality"] == 0.4 and row["quality_interval"] == [0.3, 0.5]
    assert "token f1 0.400 (0.30–0.50)" in task_named("chat").headline("sft-lora", chat)
    pref = {"preference_accuracy": 0.75, "preference_accuracy_interval": wilson_interval(3, 4),
            "train_seconds": 2.0, "peak_rss_mb": 1.0, "test_rows": 4}
    assert task_named("preference").summarize("dpo", pref)["quality_interval"] == wilson_interval(3, 4)
    assert task_named("preference").summarize("dpo", {**pref, "preference_accuracy_interval": None}
                                              )["quality_interval"] is None


def test_answer_metrics_carry_intervals():
    from tunelab.evaluation.generative import answer_metrics

    m = answer_metrics(["a b", "c", "d e f"], ["a b", "x", "d e"])
    assert m["token_f1_interval"][0] <= m["token_f1"] <= m["token_f1_interval"][1]
    assert m["exact_match_interval"] == wilson_interval(1, 3)


def test_model_card_shows_intervals_and_old_metrics_still_render():
    from tunelab.artifacts.model_card import render_generative_card, render_model_card

    card = render_model_card({"strategy": "linear-probe"}, CLASSIFIER, {})
    assert "| macro_f1 | 0.900 (0.800–0.970) on 20 test rows |" in card and "95% interval" in card
    assert "| macro_f1 | 0.9 |" in render_model_card({"strategy": "linear-probe"}, OLD, {})
    pref = {"preference_accuracy": 0.75, "preference_accuracy_interval": [0.3, 0.95], "test_rows": 4,
            "interval": {"level": 0.95, "method": "Wilson score interval", "rows": 4}}
    assert "0.750 (0.300–0.950) on 4 held-out pairs" in render_generative_card({}, pref, {}, [])


def test_web_cells_show_the_interval_and_older_runs_the_value_alone():
    from tunelab.strategies import task_named
    from tunelab.web.deps import templates
    from tunelab.web.routes_compare import table

    task = task_named("text-classification")
    out = table([task.summarize("linear-probe", CLASSIFIER), task.summarize("zero-shot", OLD)], {}, task)
    assert [b["value"] for b in out["f1_bars"]] == ["0.900 (0.80–0.97)", "0.900"] and out["intervals"]
    page = templates.env.from_string(
        '{% from "macros.html" import metric, with_interval, interval_hint %}'
        '{{ metric("macro-F1", "0.900", interval_hint(m, "macro_f1", "every label counts equally"), '
        'm.macro_f1_interval) }}|{{ with_interval(m.accuracy_interval, True, 20) }}')
    shown = page.render(m=CLASSIFIER)
    # The value stays a bare number (people and scripts read it); its interval sits right after it.
    assert '<span class="metric-value">0.900</span> <span class="muted small" data-interval' in shown
    assert "(0.80–0.97)" in shown and "95% interval on 20 test rows" in shown
    assert "(85.0–98.0%)" in shown
    old = page.render(m=OLD)
    assert "data-interval" not in old and "every label counts equally" in old


def test_the_api_documents_the_intervals():
    from tunelab.contract import Comparison, ComparisonRow, Model, RunMetrics

    props = Model.model_json_schema()["properties"]["metrics"]["anyOf"][0]["properties"]
    assert props["macro_f1_interval"]["anyOf"][0] == {"type": "array", "items": {"type": "number"},
                                                      "minItems": 2, "maxItems": 2}
    row = Comparison.model_json_schema()["properties"]["results"]["items"]
    assert "quality_interval" in row["properties"]
    m = Model(id="ft:1", metrics=CLASSIFIER)
    assert m.metrics["macro_f1_interval"] == [0.8, 0.97]           # still a dict for the SDK's users
    assert RunMetrics.model_validate(m.metrics).macro_f1_interval == [0.8, 0.97]
    assert ComparisonRow.model_validate({"strategy": "x", "error": "e"}).quality_interval is None


def test_preference_accuracy_gets_a_wilson_interval():
    from tunelab.strategies.dpo import preference_intervals

    out = preference_intervals(np.array([1.0, -0.5, 2.0, 0.3]), np.array([-1.0, -1.0, 1.0, -2.0]))
    assert out["preference_accuracy_interval"] == wilson_interval(3, 4)
    assert out["base_preference_accuracy_interval"] == wilson_interval(1, 4)
    assert out["interval"] == {"level": 0.95, "method": "Wilson score interval", "rows": 4}
    assert preference_intervals(np.array([]), np.array([]))["preference_accuracy_interval"] is None
