"""The dataset store keeps generative files (conversations, plain text, preference pairs) like
tables: content-addressed, read-only, encrypted with a codec, nothing kept from a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.data import DataError, DatasetStore

CHAT = "".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                        {"role": "assistant", "content": f"answer {i}"}]}) + "\n" for i in range(5))


class Xor:
    """A stand-in cipher: enough to see that nothing is stored in the clear."""
    def encrypt(self, data: bytes) -> bytes:
        return bytes(b ^ 0x5A for b in data)

    decrypt = encrypt


def write(folder: Path, name: str, content: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(content, encoding="utf-8")
    return folder / name


def test_import_generative_meta_and_reload(tmp_path):
    store = DatasetStore(tmp_path / "store")
    entry = store.import_generative(write(tmp_path / "up", "chat.jsonl", CHAT))
    assert {k: entry.meta[k] for k in ("name", "format", "kind", "encoding", "rows")} == {
        "name": "chat.jsonl", "format": "openai-chat", "kind": "chat", "encoding": "utf-8", "rows": 5}
    assert entry.kind == "chat" and entry.read() == CHAT.encode()
    ds = entry.load_generative()
    assert len(ds) == 5 and ds.examples[2].line == 3 and ds.examples[2].messages[1].content == "answer 2"
    with pytest.raises(ValueError):
        entry.load()                 # not a table
    again = store.import_generative(write(tmp_path / "up2", "other-name.jsonl", CHAT))
    assert again.sha256 == entry.sha256 and again.name == "chat.jsonl"
    assert not list((tmp_path / "store" / "staging").iterdir())


def test_plain_text_and_encryption(tmp_path):
    store = DatasetStore(tmp_path / "store", codec=Xor())
    text = "First document.\nStill the first.\n\nSecond document."
    entry = store.import_generative(write(tmp_path / "up", "corpus.txt", text))
    assert entry.kind == "plain" and entry.path.name == "data.enc"
    assert b"document" not in entry.path.read_bytes()
    assert [e.messages[0].content for e in entry.load_generative().examples][1] == "Second document."
    assert not list((tmp_path / "store" / "staging").iterdir())     # the decrypted copy is gone


def test_bad_generative_file_stores_nothing(tmp_path):
    store = DatasetStore(tmp_path / "store")
    bad = CHAT + json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n"
    with pytest.raises(DataError) as exc:
        store.import_generative(write(tmp_path / "up", "bad.jsonl", bad))
    assert [(i.code, i.line) for i in exc.value.issues] == [("no_assistant_turn", 6)]
    assert store.list() == [] and not list((tmp_path / "store").rglob("meta.json"))
