"""DPO (TRL, LoRA) on the shared ShareGPT preference pairs with the real pretrained stories260K:
the chosen-minus-rejected log-probability margin on held-out pairs rises."""

from __future__ import annotations

import json

import pytest

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


@pytest.mark.slow      # two DPO runs: `make test-slow`
def test_dpo_stopped_mid_epoch_resumes_from_its_checkpoint(stories260k, instruction_copy, tmp_path):
    from tunelab.training import control
    from tunelab.training.control import TrainingStopped

    model = resolve_model(str(stories260k))
    data = prepare_data(DataSpec(instruction_copy / "dpo_en_demo.json", limit=120), model)
    params = ["checkpoint_every=5", "batch_size=4"]          # ~24 steps in its one epoch

    def stop_at_7(event):
        if event.phase == "train" and event.step == 7:
            control.request_stop("test")
    control.clear()
    try:
        with pytest.raises(TrainingStopped):
            run_strategy(model, data, "dpo", params, out=tmp_path / "d", progress=stop_at_7)
    finally:
        control.clear()
    result = run_strategy(model, data, "dpo", params, out=tmp_path / "d")
    assert result.notes["resumed_from_step"] >= 7, result.notes
    assert result.notes["steps"] > result.notes["resumed_from_step"]          # went on, mid-epoch
    assert result.metrics["margin"] > result.metrics["base_margin"]
    assert (tmp_path / "d" / "manifest.json").is_file() and not (tmp_path / "d" / "checkpoints").exists()
