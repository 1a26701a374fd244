"""The in-process generative backend on the real stories260K: every served model (two LoRA adapters
sharing one base, their merged exports, a full fine-tune, the bare base) answers token for token
what `tunelab generate` writes on the same folder; adapters load on demand and are evicted past
max_adapters; concurrent streams of different adapters each get their own answer; usage counts and
finish reasons are exact; bad requests are refused with what to do."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tunelab.cli.generative import load_generator
from tunelab.models.generation import GenerationSettings
from tunelab.serving.errors import BadServingRequest, UnknownModel
from tunelab.serving.lm_backend import Completion, MultiAdapterLM

QUESTION = [{"role": "user", "content": "Who are you?"}]
GREEDY = GenerationSettings(max_new_tokens=40)


def chat(model: str, settings: GenerationSettings = GREEDY, messages=QUESTION) -> Completion:
    return Completion(model=model, messages=messages, settings=settings)


@pytest.fixture(scope="module")
def folders(stories260k, two_adapters, full_sft) -> dict:
    return {"ft:tuna": two_adapters["tuna"], "ft:marlin": two_adapters["marlin"],
            "tuna-merged": two_adapters["tuna"] / "merged", "ft:full": full_sft}


@pytest.fixture(scope="module")
def served(stories260k, folders) -> MultiAdapterLM:
    lm = MultiAdapterLM(stories260k, "stories260k", max_adapters=4)
    for name, folder in folders.items():
        lm.add(name, folder)
    return lm


@pytest.fixture(scope="module")
def reference(folders):
    """`tunelab generate`'s answer: the CLI's own loader and generate, one model at a time."""
    cache = {}

    def answer(name: str, prompt, settings: GenerationSettings = GREEDY, raw: bool = False) -> str:
        if name not in cache:
            cache[name] = load_generator(str(folders[name]))
        return cache[name].generate(prompt, settings, raw=raw)
    return answer


@pytest.mark.parametrize("name", ["ft:tuna", "ft:marlin", "tuna-merged", "ft:full"])
def test_served_answer_equals_tunelab_generate(served, reference, name):
    g = served.start(chat(name))
    assert g.text() == reference(name, "Who are you?")
    assert g.text() and g.completion_tokens > 0


def test_bare_base_is_served_with_adapters_disabled(served, stories260k):
    settings = GenerationSettings(max_new_tokens=30)
    served.start(chat("ft:tuna")).text()           # an adapter selected just before
    text = served.start(Completion("stories260k", prompt="Once upon a time", settings=settings)).text()
    assert text == load_generator(str(stories260k)).generate("Once upon a time", settings, raw=True)


def test_two_adapters_of_one_base_answer_differently_and_share_it(served):
    tuna, marlin = served.start(chat("ft:tuna")).text(), served.start(chat("ft:marlin")).text()
    assert tuna != marlin
    assert served._served["ft:tuna"].weights is served._served["ft:marlin"].weights


def test_merged_export_gives_the_same_tokens(served, folders, tmp_path):
    from tunelab.models.lm_predictors import save_merged

    merged = save_merged(load_generator(str(folders["ft:marlin"])), tmp_path / "marlin-merged")
    served.add("marlin-merged", merged)
    try:
        assert served.start(chat("marlin-merged")).text() == served.start(chat("ft:marlin")).text()
    finally:
        served.remove("marlin-merged")


def _other_base_adapter(out, stories260k):
    """A LoRA artifact of a differently shaped llama (same tokenizer), written as a run writes it."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunelab.artifacts import write_artifact
    from tunelab.models.causal import load_chat_tokenizer
    from tunelab.models.lm_predictors import CausalLMModel

    tokenizer = load_chat_tokenizer(stories260k)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64))
    base.save_pretrained(out / "base", safe_serialization=True)
    tokenizer.save_pretrained(out / "base")
    model = get_peft_model(base, LoraConfig(task_type=TaskType.CAUSAL_LM, r=2, target_modules=["q_proj"]))
    return write_artifact(out / "adapter", CausalLMModel(model, tokenizer, str(out / "base"), adapter=True),
                          config={"strategy": "test"}, metrics={}, data_report={}, card="test\n")


def test_refusals_say_what_to_do(served, stories260k, tmp_path):
    foreign = _other_base_adapter(tmp_path / "other", stories260k)
    (tmp_path / "empty").mkdir()
    long_prompt = "Once upon a time " * 400
    cases = [
        (lambda: served.start(chat("ft:nobody")), UnknownModel, "no model named 'ft:nobody'"),
        (lambda: served.add("ft:foreign", foreign), BadServingRequest, "deploy it with its own base"),
        (lambda: served.add("x", tmp_path / "empty"), BadServingRequest, "neither a tuned causal LM"),
        (lambda: served.add("x", tmp_path / "missing"), BadServingRequest, "not a folder"),
        (lambda: served.start(Completion("ft:tuna", messages=QUESTION, prompt="hi")), BadServingRequest,
         "either messages"),
        (lambda: served.start(Completion("ft:tuna", prompt=long_prompt)), BadServingRequest,
         "shorten it to under 512 tokens"),
        (lambda: served.start(chat("stories260k")), BadServingRequest, "send a prompt to /v1/completions"),
        (lambda: served.start(chat("ft:tuna", messages=[{"role": "robot", "content": "x"}])), BadServingRequest,
         "role"),
        (lambda: served.start(chat("ft:tuna", GenerationSettings(max_new_tokens=0))), BadServingRequest,
         "at least 1"),
    ]
    for call, error, words in cases:
        with pytest.raises(error, match=words):
            call()
    assert "ft:foreign" not in served.names() and "x" not in served.names()


def test_least_recently_used_adapter_is_evicted_and_reloaded_on_next_use(stories260k, two_adapters, served):
    expected = {n: served.start(chat(f"ft:{n}")).text() for n in ("tuna", "marlin")}
    lm = MultiAdapterLM(stories260k, max_adapters=1)
    for n in expected:
        assert lm.add(n, two_adapters[n]) == 0.0        # registered, not loaded
    assert lm.loaded() == []
    for n in ["tuna", "marlin", "tuna", "tuna", "marlin"]:
        assert lm.start(chat(n)).text() == expected[n]
        assert lm.loaded() == [n]
    seconds = lm.add("tuna", two_adapters["tuna"], preload=True)
    assert 0 < seconds < 2 and lm.loaded() == ["tuna"]
    lm.remove("tuna")
    assert lm.loaded() == [] and lm.names() == ["marlin"]
    assert lm._base.peft is None                      # the last adapter gone: the plain base again


def test_an_adapter_in_use_is_not_evicted_under_a_stream(stories260k, two_adapters, served):
    expected = served.start(chat("ft:tuna")).text()
    lm = MultiAdapterLM(stories260k, max_adapters=1)
    for n in ("tuna", "marlin"):
        lm.add(n, two_adapters[n])
    stream = iter(lm.start(chat("tuna")))
    first = next(stream)
    other = lm.start(chat("marlin")).text()             # loads marlin while tuna is mid-answer
    assert set(lm.loaded()) == {"tuna", "marlin"} and other
    assert first + "".join(stream) == expected
    lm.start(chat("marlin")).text()                     # tuna's stream ended: now it can go
    assert lm.loaded() == ["marlin"]


def test_concurrent_streams_of_different_adapters_interleave_and_get_their_own_answers(served):
    names = ["ft:tuna", "ft:marlin", "tuna-merged", "ft:marlin"]
    settings = GenerationSettings(max_new_tokens=60)
    expected = {n: served.start(chat(n, settings)).text() for n in set(names)}
    results, firsts, ends = [None] * len(names), [0.0] * len(names), [0.0] * len(names)
    go = threading.Barrier(len(names))

    def run(i: int):
        go.wait()
        pieces = []
        for piece in served.start(chat(names[i], settings)):
            firsts[i] = firsts[i] or time.perf_counter()
            pieces.append(piece)
        ends[i], results[i] = time.perf_counter(), "".join(pieces)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [expected[n] for n in names]
    # Fair turns: every stream had its first piece before any stream finished.
    assert max(firsts) < min(ends)


@pytest.fixture(scope="module")
def early_eos(stories260k, tmp_path_factory):
    """stories260K with the 6th token of its greedy story also marking the end of text (its
    generation_config's eos_token_id), so an answer that ends at EOS takes a few tokens, not hundreds."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("early-eos") / "stories260k"
    shutil.copytree(stories260k, folder)
    lm = load_generator(str(folder))
    with torch.inference_mode():
        story = lm.model.generate(torch.tensor([lm.prompt_ids("Once upon a time", raw=True)]), max_new_tokens=6,
                                  do_sample=False)
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [2, int(story[0, -1])]
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder


def test_usage_counts_and_finish_reasons_are_exact(served, folders, early_eos):
    served.add("early-eos", early_eos)
    cases = [("early-eos", "Once upon a time", 100, "stop"),
             ("early-eos", "Once upon a time", 4, "length"),
             ("ft:tuna", QUESTION, 7, "length"),
             ("ft:full", QUESTION, 3, "length")]
    for name, prompt, max_new, reason in cases:
        lm = load_generator(str(early_eos if name == "early-eos" else folders[name]))
        raw = isinstance(prompt, str)
        c = Completion(name, prompt=prompt, settings=GenerationSettings(max_new_tokens=max_new)) if raw \
            else chat(name, GenerationSettings(max_new_tokens=max_new), prompt)
        g = served.start(c)
        text = g.text()
        ids = lm.prompt_ids(prompt, raw=raw)
        with torch.inference_mode():       # transformers' own greedy loop counts the tokens independently
            out = lm.model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False)
        assert g.prompt_tokens == len(ids)
        assert g.completion_tokens == out.shape[1] - len(ids), (name, text)
        assert g.finish_reason == reason, (name, text)
        assert text == lm.generate(prompt, GenerationSettings(max_new_tokens=max_new), raw=raw)


def test_stop_strings_end_the_answer_before_them(served, reference):
    full = served.start(chat("ft:tuna")).text()
    stop = full.split()[2]                     # a word that occurs in the answer
    settings = GenerationSettings(max_new_tokens=40, stop=[stop])
    g = served.start(chat("ft:tuna", settings))
    assert g.text() == full[:full.index(stop)] == reference("ft:tuna", "Who are you?", settings)
    assert g.finish_reason == "stop"


def test_sampling_is_reproducible_with_a_seed(served, reference):
    def sample(seed: int) -> str:
        s = GenerationSettings(max_new_tokens=30, temperature=0.9, top_p=0.95, seed=seed)
        return served.start(chat("ft:marlin", s)).text()
    assert sample(3) == sample(3) == reference("ft:marlin", "Who are you?",
                                               GenerationSettings(max_new_tokens=30, temperature=0.9,
                                                                  top_p=0.95, seed=3))
    assert sample(3) != sample(4)


def test_max_new_tokens_is_clamped_to_the_context(served):
    prompt = "Once upon a time " * 60
    g = served.start(Completion("ft:tuna", prompt=prompt, settings=GenerationSettings(max_new_tokens=10_000)))
    g.text()
    assert g.prompt_tokens + g.completion_tokens == 512 and g.finish_reason == "length"
