"""DPO (TRL, LoRA) on the shared ShareGPT preference pairs with the real pretrained stories260K:
the chosen-minus-rejected log-probability margin on held-out pairs rises."""

from __future__ import annotations

import json

from tunelab.artifacts import load_artifact
from tunelab.models import resolve_model
from tunelab.engine import DataSpec, prepare_data, run_strategy



def test_dpo_raises_the_held_out_margin(stories260k, instruction_copy, tmp_path):
    model = resolve_model(str(stories260k))
    data = prepare_data(DataSpec(instruction_copy / "dpo_en_demo.json", limit=120), model)
    assert data.splits.train.kind == "preference" and len(data.splits.test) >= 10
    out = tmp_path / "dpo"
    result = run_strategy(model, data, "dpo", None, out=out)
    m = result.metrics
    assert m["margin"] > m["base_margin"], m
    assert m["trainable_params"] < m["total_params"] / 2            # LoRA by default
    assert m["tokens_processed"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "causal-lm" and manifest["adapter"]
    assert "chosen - rejected log-prob margin" in (out / "README.md").read_text()
    assert load_artifact(out).generate("Tell me a story.")     # the adapter reloads and answers
