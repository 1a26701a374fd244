"""linear-probe caches frozen features by (model, data): a rerun does no encoder forward."""

from __future__ import annotations

import pytest
from sentence_transformers import SentenceTransformer

from tunelab.models import resolve_model
from tunelab.engine import DataSpec, prepare_data, run_strategy


def test_second_linear_probe_run_never_runs_the_encoder(banking_subset, monkeypatch):
    model = resolve_model("minilm")
    data = prepare_data(DataSpec(*banking_subset, seed=7), model)
    first = run_strategy(model, data, "linear-probe")
    assert first.notes["feature_cache"]["misses"] >= 1

    # Latency is measured on an uncached sample by design; everything else must hit the cache.
    # Counted at the encoder's forward, which every encoding path goes through.
    real_forward = SentenceTransformer.forward
    calls = []

    def counting(self, features, *a, **k):
        calls.append(len(features["input_ids"]))
        return real_forward(self, features, *a, **k)

    monkeypatch.setattr(SentenceTransformer, "forward", counting)
    second = run_strategy(model, data, "linear-probe")
    assert second.notes["feature_cache"] == {"hits": 2, "misses": 0}
    assert sum(calls) == min(256, len(data.splits.test)), "only the latency sample may be encoded"
    assert second.metrics["macro_f1"] == pytest.approx(first.metrics["macro_f1"])
