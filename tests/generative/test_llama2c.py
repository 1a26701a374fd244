"""llama2.c import: the real pretrained stories260K converted to transformers reproduces
llama2.c's own greedy output; its tokenizer agrees with sentencepiece token for token."""

from __future__ import annotations

import json
import os

import pytest

from cli_helpers import run_cli
from tunelab.models.llama2c import ImportFailed, import_llama2c

from .conftest import INSTRUCTION, REFERENCE_STORY, STORIES


def test_cli_import_then_greedy_generation_is_coherent_story_english(tmp_path):
    out = tmp_path / "stories"
    env = {"OMP_NUM_THREADS": "1"}
    r = run_cli("models", "import-llama2c", STORIES / "checkpoint_legacy.bin", STORIES / "tok512.model",
                "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    config = json.loads((out / "config.json").read_text())
    assert config["rms_norm_eps"] == 1e-5 and config["architectures"] == ["LlamaForCausalLM"]
    r = run_cli("generate", out, "Once upon a time", "--raw", "--max-new-tokens", "30", env=env)
    assert r.returncode == 0, r.stderr
    # llama2.c's own reference output for this checkpoint, token for token.
    assert r.stdout.startswith(REFERENCE_STORY[len("Once upon a time"):]), r.stdout


def test_tokenizer_round_trips_with_sentencepiece(stories260k):
    import sentencepiece as spm

    from tunelab.models.causal import load_chat_tokenizer

    tok = load_chat_tokenizer(stories260k)
    sp = spm.SentencePieceProcessor(model_file=str(STORIES / "tok512.model"))
    records = json.loads((INSTRUCTION / "alpaca_en_demo.json").read_text(encoding="utf-8"))[:150]
    texts = [r["output"] for r in records] + [r["instruction"] for r in records]
    assert len(tok) == 512
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids == [sp.bos_id()] + sp.encode(text), text[:60]
        assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids), text[:60]


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    bogus = tmp_path / "x.bin"
    bogus.write_bytes(os.urandom(4096))
    with pytest.raises(ImportFailed, match="llama2.c"):
        import_llama2c(bogus, STORIES / "tok512.model", tmp_path / "out")
    assert not (tmp_path / "out").exists()
