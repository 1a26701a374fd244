"""Pickles of every protocol are recognised by content, whatever their name (issue 22, item 16):
protocols 0 and 1 have no header, so the sniffer reads the bytes as pickle opcodes
(pickletools.genops: parsed, never executed) and refuses a stream that would import something.
Ordinary model-folder files (text, JSON, images, random bytes) are not mistaken for pickles."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from tunelab.security.weights import looks_like_pickle

from .test_model_uploads import _Canary, _zip_bytes
from .test_model_uploads import _safetensors as safetensors_bytes

SQLITE_ONLY = True   # database-independent: see tests/service/conftest.py


def _safetensors() -> bytes:
    return safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)


CONFIG = json.dumps({"model_type": "bert", "architectures": ["BertModel"]}).encode()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_is_refused_under_any_name_and_never_unpickled(client_a, tmp_path, protocol):
    canary = tmp_path / f"canary-{protocol}"
    payload = pickle.dumps(_Canary(canary), protocol=protocol)
    for name in ("innocent.json.weights", "tokenizer.model", "README"):   # names no suffix rule catches
        archive = _zip_bytes({"config.json": CONFIG, "model.safetensors": _safetensors(), name: payload})
        r = client_a.post("/api/v1/models/import", files={"file": ("model.zip", archive)}, data={"name": "m"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "pickle", (name, r.text)
        assert name in r.json()["error"]["message"]
    for name in ("data.pkl", "data.csv", "data.jsonl"):       # as a dataset: text formats only, never unpickled
        r = client_a.post("/api/v1/datasets", files={"file": (name, payload)})
        assert r.status_code in (201, 422), (name, r.text)
    assert not canary.exists()


def _sniff(tmp_path, data: bytes) -> bool:
    path = tmp_path / "f"
    path.write_bytes(data)
    return looks_like_pickle(path)


def test_a_long_harmless_prefix_does_not_hide_the_import(tmp_path):
    """The scan does not stop after a bounded prefix: a 3 MB string pushed and popped before the
    code (an unpickler runs it all) is skipped without being read into memory."""
    code = pickle.dumps(_Canary(tmp_path / "x"), protocol=1)
    assert _sniff(tmp_path, pickle.dumps("x" * 3_000_000, protocol=1)[:-1] + b"0" + code)
    assert _sniff(tmp_path, b"V" + b"x" * 3_000_000 + b"\n0" + pickle.dumps(_Canary(tmp_path / "x"), protocol=0))
    assert _sniff(tmp_path, pickle.dumps({"plain": [1, 2, 3]}, protocol=0))   # data only: still a pickle


@pytest.mark.parametrize("content", [
    b"This model was trained on banking texts.\n" * 50_000,     # starts with an opcode (BINSTRING)
    b"copyright 2024 the authors\nall rights reserved\n",         # reads as GLOBAL, never imports
    b"N.B. see the card\n", b'{"vocab_size": 30522}', b"[PAD]\n[UNK]\n[CLS]\n", b"#version: 0.2\nh e\n",
    b"---\nlicense: mit\n---\n# Model\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20,
    b"\x0a\x0b\x0c" + bytes(4000),                               # a sentencepiece protobuf's start
], ids=["readme", "copyright", "nb", "json", "vocab", "merges", "card", "png", "sentencepiece"])
def test_ordinary_model_files_are_not_pickles(tmp_path, content):
    assert not _sniff(tmp_path, content)


def test_random_bytes_are_rarely_mistaken_for_a_pickle(tmp_path):
    flagged = sum(_sniff(tmp_path, os.urandom(20_000)) for _ in range(500))
    assert flagged <= 15, flagged        # measured: about 0.3%
