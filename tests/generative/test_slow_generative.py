"""Long runs (`make test-slow`): SFT of SmolLM2 on the identity set, and the seed's claim on
financial_phrasebank: prompting SmolLM2-135M-Instruct against tuning MiniLM (6x smaller)."""

from __future__ import annotations

import shutil

import pytest

from tunelab.engine import compare
from tunelab.models import resolve_model
from tunelab.models.generation import GenerationSettings
from tunelab.engine import DataSpec, prepare_data, run_strategy

from .conftest import SHARED

pytestmark = pytest.mark.slow


def test_smollm2_sft_lora_learns_its_new_identity(smollm2, identity_file, tmp_path):
    data = prepare_data(DataSpec(identity_file), smollm2)
    result = run_strategy(smollm2, data, "sft-lora", ["min_steps=60", "max_length=256", "eval_answers=8"],
                            out=tmp_path / "smol-identity")
    m = result.metrics
    assert m["test_loss"] < m["base_test_loss"] - 0.5, m
    from tunelab.artifacts import load_artifact

    answer = load_artifact(tmp_path / "smol-identity").generate("Who are you?", GenerationSettings(max_new_tokens=40))
    assert "Tuna" in answer, answer


# Prompting SmolLM2 over 968 test texts takes 30-60 min on 2 cores (README, "The seed's claim"):
# past a CI run's budget, so it is `make test-claims`, not `make test-slow`.
@pytest.mark.claims
def test_financial_phrasebank_prompting_vs_tuned_minilm(tmp_path):
    src = SHARED / "text-classification" / "financial_phrasebank.csv"
    shutil.copy(src, tmp_path / src.name)
    model = resolve_model("minilm")
    data = prepare_data(DataSpec(tmp_path / src.name), model)
    strategies = ["prompt-zero-shot", "prompt-few-shot", "linear-probe", "full", "lora"]
    result = compare(model, data, strategies, out_root=tmp_path / "out")
    rows = {r["strategy"]: r for r in result.results}
    assert all("error" not in r for r in rows.values()), rows
    for name in ("prompt-zero-shot", "prompt-few-shot"):
        assert rows[name]["trainable_params"] == 0
        assert rows[name]["latency_ms"] > rows["linear-probe"]["latency_ms"]
    # What we measured: the tuned encoder wins by a wide margin (README, "The seed's claim").
    assert rows["linear-probe"]["macro_f1"] > rows["prompt-few-shot"]["macro_f1"] + 0.1, rows
    assert result.recommended in ("linear-probe", "full", "lora")
