"""The UI's pure parts for chat and preference data, without a server: the advisor's facts and
recommendation, the wizard's strategies and models, the comparison's columns, the playground's
caps and its generation slots."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tunelab.models.catalog import ModelSpec
from tunelab.services import generation
from tunelab.services.generation import GenerationRefused
from tunelab.strategies import get_strategy, task_named
from tunelab.web import wizard
from tunelab.web.advisor import DataFacts, advise, explanation, recommend
from tunelab.web.routes_compare import table
from tunelab.web.routes_jobs import quality

CHAT_STATS = {"rows": 91, "format": "alpaca", "kind": "chat", "turns": {"mean": 2.0, "max": 2},
              "length_unit": "tokens", "length": {"mean": 112.4, "p95": 159, "max": 257}}
PREFERENCE_STATS = {"rows": 300, "format": "sharegpt", "kind": "preference"}


def no_cuda() -> bool:
    return get_strategy("sft-qlora").unavailable() is not None


def test_chat_facts_speak_of_conversations_turns_and_tokens_never_labels():
    facts = DataFacts.from_stats(CHAT_STATS, task="chat")
    assert (facts.rows, facts.labels, facts.generative, facts.kind) == (91, 0, True, "chat")
    line = facts.line()
    assert line == ("91 conversations, 2.0 messages each on average; examples average 112 tokens "
                    "(95% under 159, the longest 257).")
    assert DataFacts.from_stats(CHAT_STATS, limit=40, task="chat").rows == 40
    pairs = DataFacts.from_stats(PREFERENCE_STATS, task="preference")
    assert pairs.line() == "300 preference pairs." and not pairs.measured       # no tokenizer counted them
    classification = DataFacts.from_stats({"rows": 100, "num_labels": 2, "label_counts": {"a": 60, "b": 40}})
    assert "labels" in classification.line() and not classification.generative


def test_advisor_recommends_lora_for_chat_and_dpo_for_preference_pairs():
    chat = DataFacts.from_stats(CHAT_STATS, task="chat")
    for budget in ("fast", "balanced", "best"):
        pick, reasons = recommend(chat, budget, cuda=False, task="chat")
        assert pick == "sft-lora"                            # never sft-qlora without CUDA
        assert reasons[0] == chat.line() and "label" not in " ".join(reasons).lower()
        assert reasons[1] == get_strategy("sft-lora").advice
    assert recommend(DataFacts.from_stats(PREFERENCE_STATS, task="preference"), task="preference")[0] == "dpo"
    names = [s["name"] for s in wizard.strategies("chat")]
    advice = advise(chat, 134_515_008, names, task="chat", history={"sft-full": 0.5})
    assert advice.recommended == "sft-lora" and chat.model_params == 134_515_008
    assert set(advice.seconds) == set(names) and all(s > 0 for s in advice.seconds.values())
    assert advice.seconds["sft-full"] == 0.5 * 91 and advice.basis["sft-full"] == "from your past runs"
    assert [t for t, _ in explanation("chat")] == ["Full fine-tuning or adapters?", "How it is scored."]
    assert [t for t, _ in explanation("preference")] == ["Preference tuning."]
    assert [t for t, _ in explanation("text-classification")] == ["Transfer learning.", "Fine-tuning."]


def test_advisor_follows_a_strategys_own_rule_with_the_models_size():
    """The advisor passes the base model's size in the facts; sft-full's own rule claims small models."""
    chat = DataFacts.from_stats(CHAT_STATS, task="chat")
    assert advise(chat, 260_000, ["sft-lora", "sft-full"], task="chat").recommended == "sft-full"
    assert advise(chat, 134_515_008, ["sft-lora", "sft-full"], task="chat").recommended == "sft-lora"
    assert advise(chat, 134_515_008, ["sft-lora", "sft-full"], task="chat", budget="best").recommended == "sft-full"
    assert "small model" in advise(chat, 260_000, ["sft-full"], task="chat").reasons[1]


@pytest.mark.skipif(not no_cuda(), reason="this machine has CUDA: sft-qlora is offered")
def test_wizard_offers_chat_strategies_with_qlora_disabled_without_cuda():
    chat = wizard.strategies("chat")
    assert [s["name"] for s in chat] == ["sft-lora", "sft-full", "sft-qlora"]
    assert [bool(s["disabled"]) for s in chat] == [False, False, True]
    assert chat[2]["disabled"] == wizard.NO_GPU and all(s["family"] == "fine-tune" for s in chat)
    assert [s["name"] for s in wizard.strategies("preference")] == ["dpo"]
    fields = {f.name for f in wizard.fields("sft-lora")}
    assert {"min_steps", "r", "max_new_tokens"} <= fields
    form = {"p.sft-lora.__shown": "1", "p.sft-lora.min_steps": "30", "p.sft-lora.epochs": "3"}
    assert wizard.params_from_form("sft-lora", form) == {"min_steps": 30}


def test_model_picker_shows_causal_lms_for_generative_data_and_encoders_for_tables():
    def spec(name, kind, task):
        return ModelSpec(name=name, path=Path("/nowhere"), kind=kind, task=task, from_catalog=True)
    catalog = [spec("minilm", "encoder", "text-classification"), spec("smollm2", "causal-lm", "text-generation")]
    uploaded = [{"id": "upload:a", "architectures": ["LlamaForCausalLM"]},
                {"id": "upload:b", "architectures": ["BertModel"]}, {"id": "upload:c"}]
    models, own = wizard.models_for(task_named("chat"), catalog, uploaded)
    assert [m.name for m in models] == ["smollm2"] and [m["id"] for m in own] == ["upload:a"]
    models, own = wizard.models_for(task_named("preference"), catalog, uploaded)
    assert [m.name for m in models] == ["smollm2"]
    models, own = wizard.models_for(task_named("text-classification"), catalog, uploaded)
    assert [m.name for m in models] == ["minilm"] and [m["id"] for m in own] == ["upload:b", "upload:c"]


def test_comparison_table_has_generative_columns_and_the_tasks_quality():
    chat = task_named("chat")
    rows = [chat.summarize("sft-lora", {"token_f1": 0.6, "test_loss": 2.6, "base_test_loss": 6.1,
                                        "exact_match": 0.25, "train_seconds": 20.0, "trainable_params": 9}),
            {"strategy": "sft-full", "error": "failed: out of memory"}]
    out = table(rows, {"sft-lora": "ft:x"}, chat)
    assert out["task"] == {"name": "chat", "quality_label": "token F1", "quality": "token_f1", "generative": True}
    assert out["headers"] == ["Held-out loss", "Base loss", "Exact match"]      # token F1 is the quality
    assert out["rows"][0]["cells"] == ["2.600", "6.100", "25.0%"] and out["rows"][0]["model"] == "ft:x"
    assert out["f1_bars"] == [{"label": "sft-lora", "pct": 100.0, "value": "0.600"}]
    assert "cells" not in out["rows"][1]
    classic = table([{"strategy": "lora", "macro_f1": 0.9, "cost_seconds": 3.0}], {})
    assert classic["headers"] == [] and not classic["task"]["generative"]
    assert quality({"task": "chat", "token_f1": 0.5}) == {"label": "token F1", "value": 0.5}
    assert quality({"macro_f1": 0.8}) == {"label": "macro-F1", "value": 0.8}


def test_playground_caps_and_settings():
    s = generation.settings_from("64", "0.7", "", None)
    assert (s.max_new_tokens, s.temperature, s.top_p, s.seed) == (64, 0.7, 1.0, 0)
    assert generation.settings_from().max_new_tokens == generation.DEFAULT_NEW_TOKENS
    for bad in ({"max_new_tokens": "513"}, {"max_new_tokens": "0"}, {"max_new_tokens": "ten"},
                {"temperature": "inf"}, {"temperature": "-1"}, {"top_p": "0"}):
        with pytest.raises(GenerationRefused) as exc:
            generation.settings_from(**bad)
        assert exc.value.status == 422
    assert generation.check_prompt("  hi ") == "hi"
    with pytest.raises(GenerationRefused):
        generation.check_prompt(" ")
    with pytest.raises(GenerationRefused):
        generation.check_prompt("x" * (generation.MAX_PROMPT_CHARS + 1))
    chat = SimpleNamespace(metrics={"task": "chat"})
    assert generation.is_generative(chat) and not generation.is_generative(SimpleNamespace(metrics={}))
    assert not generation.is_generative(SimpleNamespace(metrics={"task": "text-classification"}))


class FakeLM:
    kind, max_length = "causal-lm", 20

    def __init__(self):
        self.asked = None

    def prompt_ids(self, prompt):
        return list(range(len(prompt.split())))

    def stream(self, prompt, settings):
        self.asked = settings.max_new_tokens
        yield from ("Hello", ", ", "world")


def test_answers_stream_within_the_context_and_the_generation_slots():
    lm = FakeLM()
    answer = generation.start(lm, "one two three four five", generation.settings_from("100"))
    assert list(answer) == ["Hello", ", ", "world"] and lm.asked == 15      # 20-token context, 5 in the prompt
    with pytest.raises(GenerationRefused) as exc:
        generation.start(lm, " ".join(["w"] * 20), generation.settings_from())
    assert exc.value.status == 422 and "at most 20" in exc.value.message
    held = [generation.start(lm, "hi", generation.settings_from()) for _ in range(generation.CONCURRENT)]
    with pytest.raises(GenerationRefused) as exc:
        generation.start(lm, "hi", generation.settings_from())
    assert exc.value.status == 429
    held[0].close()
    held[0].close()                                 # once only
    assert generation.start(lm, "hi", generation.settings_from()).text() == "Hello, world"
    for a in held[1:]:
        assert a.text() == "Hello, world"           # written out: its slot is free again
    again = [generation.start(lm, "hi", generation.settings_from()) for _ in range(generation.CONCURRENT)]
    for a in again:
        a.close()
    with pytest.raises(GenerationRefused) as exc:
        generation.load(SimpleNamespace(get=lambda path: SimpleNamespace(kind="classifier")), "x")
    assert exc.value.status == 409 and "classification playground" in exc.value.message
