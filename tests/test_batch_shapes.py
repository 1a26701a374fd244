"""Runs of similar length: every row once, within budget, never costlier than the whole batch, and
the same gradient as the whole batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tunelab.billing.lengths import lengths_from_histogram, padding_factor
from tunelab.data.stats import _histogram
from tunelab.models.batch_shapes import fits, inference_runs, run_cost, split_batch
from tunelab.training.loop import ClassificationTask, EncodedSplit, LoopConfig

RNG = np.random.default_rng(0)
CASES = {
    "short, even": RNG.integers(12, 14, 32),
    "one long text among short": np.r_[238, RNG.integers(20, 60, 31)],
    "long tail": np.r_[RNG.integers(150, 256, 4), RNG.integers(10, 40, 60)],
    "all at the maximum": np.full(32, 256),
    "a single row": np.array([300]),
}


@pytest.mark.parametrize("lengths", CASES.values(), ids=CASES.keys())
def test_runs_cover_the_batch_within_budget_and_cost_no_more(lengths):
    index = np.arange(len(lengths))
    runs = split_batch(index, lengths)
    assert sorted(np.concatenate(runs).tolist()) == index.tolist()
    assert all(len(r) == 1 or fits(len(r), int(lengths[r].max())) for r in runs)
    if fits(len(index), int(lengths.max())):      # else the budget, not the cost, forces the cuts
        whole = run_cost(len(index), int(lengths.max()))
        assert sum(run_cost(len(r), int(lengths[r].max())) for r in runs) <= whole + 1e-9


def test_short_even_batches_stay_whole_and_a_long_outlier_runs_alone():
    assert len(split_batch(np.arange(32), CASES["short, even"])) == 1
    runs = split_batch(np.arange(32), CASES["one long text among short"])
    assert runs[0].tolist() == [0]          # the 238-token text no longer pads 31 short ones


def test_inference_runs_keep_every_row_once():
    lengths = np.r_[RNG.integers(5, 250, 300)]
    runs = inference_runs(lengths, 128)
    assert sorted(np.concatenate(runs).tolist()) == list(range(300))
    assert all(len(r) <= 128 for r in runs)


def test_micro_batches_give_the_whole_batch_gradient():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=3, attn_implementation="eager", hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(cfg)
    lengths = CASES["long tail"]
    ids = [[1] + list(RNG.integers(2, 60, size=int(n) - 1)) for n in lengths]
    split = EncodedSplit(ids, np.array([i % 3 for i in range(len(ids))]))
    task, loop_cfg, index = ClassificationTask(pad_id=0), LoopConfig(), np.arange(len(ids))

    def grads(parts):
        model.zero_grad()
        for part, share in parts:
            loss, _ = task.loss(model, split, part, "cpu", loop_cfg)
            (loss * share).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    parts = task.micro_batches(split, index)
    assert len(parts) > 1
    assert torch.allclose(grads(parts), grads([(index, 1.0)]), atol=1e-6)


def test_a_long_tail_costs_more_per_token_than_even_lengths():
    even, tail = np.full(2000, 40), np.r_[np.full(1900, 30), np.full(100, 230)]
    assert padding_factor(even, 32, "cpu", training=True) < padding_factor(tail, 32, "cpu", training=True)
    skewed = np.clip(np.round(np.random.default_rng(1).lognormal(3.2, 0.6, 5000)), 3, 256).astype(int)
    rebuilt = lengths_from_histogram(_histogram(skewed.tolist()), 2000, 256)
    assert abs(rebuilt.mean() - skewed.mean()) / skewed.mean() < 0.05
    assert abs(padding_factor(rebuilt, 32, "cpu", True) / padding_factor(skewed, 32, "cpu", True) - 1) < 0.05
    assert lengths_from_histogram(None, 100, 256) is None and padding_factor(None, 32, "cpu", True) == 1.0


@pytest.mark.parametrize("seconds, calls", [(0.0, 4), (0.5, 4), (3.0, 2)])
def test_preflight_times_slow_steps_once(monkeypatch, seconds, calls):
    from tunelab.training import preflight

    clock = {"t": 0.0, "calls": 0}

    def step():
        clock["calls"] += 1
        clock["t"] += seconds
    monkeypatch.setattr(preflight.time, "perf_counter", lambda: clock["t"])
    assert preflight.time_steps(step) == pytest.approx(seconds)
    assert clock["calls"] == calls          # warm-up + 3 timed, or warm-up + 1 when slow
