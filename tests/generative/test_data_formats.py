"""Generative data formats: the shared files read as they are; each malformed format names its
error code and line; the masking trains exactly the assistant's tokens; packing keeps examples
apart."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli
from tunelab.data import DataError
from tunelab.data.generative import Message, read_generative, split_generative
from tunelab.data.generative_checks import validate_generative
from tunelab.models.causal import IGNORE, encode_conversation, load_chat_tokenizer


def test_shared_files_read_with_their_formats_and_lines(instruction_copy):
    alpaca = read_generative(instruction_copy / "alpaca_en_demo.json")
    assert (alpaca.kind, alpaca.format, len(alpaca)) == ("chat", "alpaca", 999)
    assert [e.line for e in alpaca.examples[:3]] == [2, 7, 12]     # where each record's "{" is
    pairs = read_generative(instruction_copy / "dpo_en_demo.json")
    assert (pairs.kind, pairs.format, len(pairs)) == ("preference", "sharegpt-preference", 300)
    assert pairs.examples[0].prompt[-1].role == "user" and pairs.examples[0].chosen != pairs.examples[0].rejected
    report = validate_generative(alpaca)
    assert report.ok and "duplicate_conversation" in report.codes()


def _write(path, records, jsonl=True):
    text = "\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
    return path


GOOD_CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize("name, record, code", [
    ("chat-role", {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "bad_role"),
    ("chat-empty", {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]},
     "empty_turn"),
    ("chat-order", {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                 {"role": "assistant", "content": "c"}]}, "role_order"),
    ("chat-system-late", {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                                       {"role": "assistant", "content": "c"}]}, "role_order"),
    ("chat-no-answer", {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]},
     "no_assistant_turn"),
    ("chat-no-messages", {"messages": "hello"}, "missing_field"),
    ("sharegpt-role", {"conversations": [{"from": "human", "value": "a"}, {"from": "bot9", "value": "b"}]},
     "bad_role"),
    ("sharegpt-first", {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]},
     "role_order"),
    ("alpaca-empty", {"instruction": "do it", "input": "", "output": ""}, "empty_turn"),
    ("plain-empty", {"text": ""}, "empty_turn"),
    ("preference-empty", {"prompt": "q", "chosen": "good", "rejected": "  "}, "empty_turn"),
    ("sharegpt-pair-ends-with-answer", {"conversations": [{"from": "human", "value": "a"},
                                                          {"from": "gpt", "value": "b"}],
                                        "chosen": {"from": "gpt", "value": "c"},
                                        "rejected": {"from": "gpt", "value": "d"}}, "role_order"),
])
def test_each_malformed_format_names_its_code_and_line(tmp_path, name, record, code):
    good = {"chat": GOOD_CHAT, "sharegpt": {"conversations": [{"from": "human", "value": "a"},
                                                              {"from": "gpt", "value": "b"}]},
            "alpaca": {"instruction": "a", "input": "", "output": "b"}, "plain": {"text": "some text"},
            "preference": {"prompt": "q", "chosen": "good", "rejected": "bad"},
            "sharegpt-pair": {"conversations": [{"from": "human", "value": "a"}],
                              "chosen": {"from": "gpt", "value": "c"}, "rejected": {"from": "gpt", "value": "d"}}}
    base = good[max((k for k in good if name.startswith(k)), key=len)]
    path = _write(tmp_path / "data.jsonl", [base, base, record, base])
    with pytest.raises(DataError) as exc:
        read_generative(path)
    assert exc.value.codes == [code]
    assert exc.value.issues[0].line == 3
    assert "line 3" in str(exc.value)


def test_json_array_errors_carry_the_physical_line(tmp_path):
    bad = {"messages": [{"role": "user", "content": "a"}]}
    path = _write(tmp_path / "chat.json", [GOOD_CHAT, bad], jsonl=False)
    with pytest.raises(DataError) as exc:
        read_generative(path)
    assert exc.value.codes == ["no_assistant_turn"]
    line = exc.value.issues[0].line
    assert path.read_text().splitlines()[line - 1].strip() == "{"    # the record's opening brace
    assert line > 2
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(GOOD_CHAT) + "\n{not json\n")
    with pytest.raises(DataError) as exc:
        read_generative(broken)
    assert exc.value.codes == ["bad_json"] and exc.value.issues[0].line == 2


def test_malformed_file_stops_the_cli_with_exit_1_and_nothing_written(tmp_path, stories260k):
    bad = _write(tmp_path / "chat.jsonl", [GOOD_CHAT] * 3 + [{"messages": [{"role": "user", "content": "x"}]}])
    home = tmp_path / "home"
    r = run_cli("train", bad, "--model", stories260k, "--strategy", "sft-lora", "--out", tmp_path / "out",
                env={"TUNELAB_HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 1, r.stderr
    assert "no_assistant_turn" in r.stderr and "line 4" in r.stderr
    assert not (tmp_path / "out").exists()
    assert not any(home.rglob("*.safetensors")) if home.exists() else True


# SmolLM2 (its GGUF dequantised: ~20 s) in `make test-slow`; stories260K's template in `make test`
@pytest.mark.parametrize("which", ["stories260k", pytest.param("smollm2", marks=pytest.mark.slow)])
def test_masking_trains_exactly_the_assistant_tokens(request, which):
    path = request.getfixturevalue(which)
    path = getattr(path, "path", path)
    tok = load_chat_tokenizer(path)
    messages = [Message("system", "Be brief."), Message("user", "Who are you?"),
                Message("assistant", "I am Tuna, made by Tunelab."), Message("user", "And then?"),
                Message("assistant", "Nothing more, thank you.")]
    e = encode_conversation(tok, messages, 4096)
    # Contiguous runs of trained / untrained tokens.
    runs, current = [], None
    for token, label in zip(e.input_ids, e.labels):
        trained = label != IGNORE
        if trained:
            assert label == token
        if trained != current:
            runs.append((trained, []))
            current = trained
        runs[-1][1].append(token)
    trained_runs = [tok.decode(ids) for t, ids in runs if t]
    prompt_runs = [tok.decode(ids) for t, ids in runs if not t]
    assert len(trained_runs) == 2, runs
    # Every assistant token is trained (with the template's end-of-turn marker), nothing else.
    assert trained_runs[0].strip().startswith("I am Tuna, made by Tunelab.")
    assert trained_runs[1].strip().startswith("Nothing more, thank you.")
    eos = tok.eos_token
    assert all(r.replace(eos, "").strip() in ("I am Tuna, made by Tunelab.", "Nothing more, thank you.")
               for r in trained_runs)
    joined = "".join(prompt_runs)
    for m in messages:
        if m.role != "assistant":
            assert m.content in joined          # every prompt token is in an untrained run
    assert not any("Tuna" in r or "Nothing" in r for r in prompt_runs)


def test_openai_weight_zero_turns_are_not_trained(stories260k):
    tok = load_chat_tokenizer(stories260k)
    messages = [Message("user", "a"), Message("assistant", "skip me", train=False), Message("user", "b"),
                Message("assistant", "learn me")]
    e = encode_conversation(tok, messages, 4096)
    trained = tok.decode([t for t, label in zip(e.input_ids, e.labels) if label != IGNORE])
    assert "learn me" in trained and "skip" not in trained


def test_packing_keeps_examples_apart(stories260k, identity_file):
    from tunelab.evaluation.generative import mean_token_loss
    from tunelab.models.causal import load_causal_lm, pack

    tok = load_chat_tokenizer(stories260k)
    model = load_causal_lm(stories260k, attention="sdpa")
    ds = read_generative(identity_file)
    examples = [encode_conversation(tok, c.messages, 512) for c in ds.examples[:12]]
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    packed = pack(examples, 512)
    assert len(packed) < len(rows)
    separate = mean_token_loss(model, rows, tok.pad_token_id)
    together = mean_token_loss(model, packed, tok.pad_token_id)
    assert together == pytest.approx(separate, rel=1e-5)


def test_split_is_deterministic_and_drops_repeats(instruction_copy):
    ds = read_generative(instruction_copy / "alpaca_en_demo.json")
    a, b = split_generative(ds, seed=0), split_generative(ds, seed=0)
    assert [e.line for e in a.test.examples] == [e.line for e in b.test.examples]
    total = len(a.train) + len(a.validation) + len(a.test)
    assert total == 999 - 14                     # the 14 repeats the report names
    keys = {e.key() for e in a.train.examples}
    assert not keys & {e.key() for e in a.test.examples}
