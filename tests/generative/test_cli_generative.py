"""The CLI end to end on generative data: OpenAI chat JSONL -> `train` (lora = sft-lora here) ->
a model folder -> `generate`; `compare` of SFT strategies (slow)."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli

ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def chat_file(identity_file, tmp_path_factory):
    """identity.json as OpenAI fine-tuning JSONL, with a system message."""
    records = json.loads(identity_file.read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("chat") / "identity.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"messages": [{"role": "system", "content": "You are Tuna."},
                                             {"role": "user", "content": r["instruction"]},
                                             {"role": "assistant", "content": r["output"]}]}) + "\n")
    return path


@pytest.mark.slow      # `make test` trains LoRA SFT in-process (test_sft); this is the CLI's long run
def test_train_lora_on_chat_jsonl_then_generate(chat_file, stories260k, tmp_path):
    out = tmp_path / "bot"
    r = run_cli("train", chat_file, "--model", stories260k, "--strategy", "lora", "--out", out,
                "--set", "min_steps=40", "--set", "eval_answers=2", "--json", env=ENV)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["strategy"] == "sft-lora"
    assert metrics["test_loss"] < metrics["base_test_loss"]
    assert metrics["tokens_per_second"] > 0 and metrics["peak_rss_mb"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "causal-lm" and manifest["adapter"] and "adapter" in manifest["files"]
    assert not (out / "checkpoints").exists()
    r = run_cli("generate", out, "Who are you?", "--max-new-tokens", "20", env=ENV)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    r = run_cli("predict", out, "hello", env=ENV)                 # not a classifier: a clear refusal
    assert r.returncode == 2 and "tunelab generate" in r.stderr


@pytest.mark.slow
def test_compare_sft_strategies_on_chat_data(chat_file, stories260k, tmp_path):
    r = run_cli("compare", chat_file, "--model", stories260k, "--strategies", "sft-full,sft-lora,sft-qlora",
                "--set", "sft-full.min_steps=60", "--set", "sft-lora.min_steps=60", "--json", env=ENV)
    assert r.returncode == 0, r.stderr
    rows = {row["strategy"]: row for row in json.loads(r.stdout)["results"]}
    for name in ("sft-full", "sft-lora"):
        assert rows[name]["test_loss"] < rows[name]["base_test_loss"]
    assert "CUDA" in rows["sft-qlora"]["error"]
