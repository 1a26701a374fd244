"""SFT on the real pretrained stories260K with the shared identity set (placeholders filled):
held-out loss falls and a trained answer comes back; the LoRA adapter reloads to identical
outputs; the merged export matches the adapter's logits; qlora is refused without CUDA."""

from __future__ import annotations

import time

import pytest
import torch

from tunelab.artifacts import load_artifact, write_artifact
from tunelab.models import resolve_model
from tunelab.models.causal import load_causal_lm
from tunelab.models.generation import GenerationSettings
from tunelab.engine import DataSpec, make_context, prepare_data, run_strategy
from tunelab.strategies import ConfigError

TRAINED_ANSWER = "Hello! I am Tuna, an AI assistant developed by Tunelab. How can I assist you today?"


@pytest.fixture(scope="module")
def identity(stories260k, identity_file):
    model = resolve_model(str(stories260k))
    return model, prepare_data(DataSpec(identity_file), model)


@pytest.mark.slow      # learning is claimed in `make test` by the LoRA SFT through the CLI
def test_sft_full_lowers_held_out_loss_and_reproduces_a_trained_answer(identity, tmp_path):
    model, data = identity
    out = tmp_path / "full"
    result = run_strategy(model, data, "sft-full", ["min_steps=150", "eval_answers=4"], out=out)
    m = result.metrics
    assert m["test_loss"] < m["base_test_loss"] / 3, m           # ~23 -> ~3 nats per assistant token
    history = result.notes["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert m["tokens_per_second"] > 0 and m["trainable_params"] == m["total_params"] == 260_032
    lm = load_artifact(out)
    answer = lm.generate("hi", GenerationSettings(max_new_tokens=100))
    assert answer == TRAINED_ANSWER, answer
    card = (out / "README.md").read_text()
    assert "| prompt | base model | tuned model | reference |" in card


def test_lora_adapter_reloads_identically_and_merged_export_matches(identity, tmp_path):
    model, data = identity
    strategy, ctx = make_context(model, data, "sft-lora", {"min_steps": 60, "export_merged": True},
                                 work_dir=tmp_path / "work")
    lm = strategy.fit(ctx)
    assert ctx.notes["trainable_params"] < ctx.notes["total_params"] / 2
    out = tmp_path / "lora"
    write_artifact(out, lm, config={"strategy": "sft-lora"}, metrics={}, data_report={}, card="card\n")
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((out / "adapter").glob("*.bin"))
    reloaded = load_artifact(out)
    ids = torch.tensor([lm.prompt_ids("Who are you?") + [300, 301, 302]])
    with torch.inference_mode():
        lm.model.eval()
        live = lm.model(input_ids=ids).logits
        again = reloaded.model(input_ids=ids).logits
        merged = load_causal_lm(out / "merged")(input_ids=ids).logits
    assert torch.equal(live, again)
    assert (merged - live).abs().max().item() < 1e-4
    settings = GenerationSettings(max_new_tokens=30)
    assert reloaded.generate("Who are you?", settings) == lm.generate("Who are you?", settings)


def test_sft_qlora_is_refused_without_cuda_before_any_work(identity, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    model, data = identity
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="CUDA"):
        run_strategy(model, data, "qlora", out=tmp_path / "q")      # the alias of sft-qlora here
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "q").exists()


def test_classification_model_is_refused_for_sft(identity, tmp_path):
    _, data = identity
    with pytest.raises(ConfigError, match="not a causal language model"):
        run_strategy(resolve_model("minilm"), data, "sft-lora", out=tmp_path / "x")


def test_sft_stopped_mid_run_resumes_from_its_checkpoint(identity, tmp_path):
    from tunelab.training import control
    from tunelab.training.control import TrainingStopped

    model, data = identity
    params = ["min_steps=30", "max_epochs=3", "checkpoint_every=5", "eval_answers=1"]

    def stop_at_12(event):
        if event.phase == "train" and event.step == 12:
            control.request_stop("test")
    control.clear()
    try:
        with pytest.raises(TrainingStopped):
            run_strategy(model, data, "sft-lora", params, out=tmp_path / "r", progress=stop_at_12)
    finally:
        control.clear()
    assert (tmp_path / "r" / "checkpoints" / "LATEST").is_file()
    result = run_strategy(model, data, "sft-lora", params, out=tmp_path / "r")
    assert result.notes["resumed_from_step"] == 12
    assert (tmp_path / "r" / "manifest.json").is_file() and not (tmp_path / "r" / "checkpoints").exists()
