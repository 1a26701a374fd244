"""The dataset store: atomic, content-addressed, read-only, nothing kept from bad files."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tunelab.data import DataError, DataLimits, DatasetStore

SHARED = Path("/work/shared/datasets/text-classification")
GOOD = "text,label\ngood product,pos\nbad product,neg\ngreat value,pos\nawful,neg\n"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")] if root.exists() else []


def test_import_layout_and_meta(tmp_path):
    store = DatasetStore(tmp_path / "store")
    entry = store.import_file(write(tmp_path / "up", "reviews.csv", GOOD))
    sha = entry.sha256
    assert entry.path == tmp_path / "store" / "objects" / sha[:2] / sha / "reviews.csv"
    assert entry.path.read_text(encoding="utf-8") == GOOD
    meta = json.loads((entry.path.parent / "meta.json").read_text(encoding="utf-8"))
    assert meta == entry.meta
    assert {k: meta[k] for k in ("sha256", "name", "format", "encoding", "columns", "rows")} == {
        "sha256": sha, "name": "reviews.csv", "format": "csv", "encoding": "utf-8",
        "columns": ["text", "label"], "rows": 4}
    for f in (entry.path, entry.path.parent / "meta.json"):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o444
    ds = entry.load()
    assert ds.sha256 == sha and ds.labels == ["pos", "neg", "pos", "neg"] and ds.source == "reviews.csv"


def test_same_content_twice_is_one_entry(tmp_path):
    store = DatasetStore(tmp_path / "store")
    first = store.import_file(write(tmp_path / "a", "one.csv", GOOD))
    second = store.import_file(write(tmp_path / "b", "two.csv", GOOD))
    assert second.sha256 == first.sha256 and second.path == first.path
    assert [e.sha256 for e in store.list()] == [first.sha256]
    assert store.get(first.sha256).meta == first.meta


def test_list_and_get(tmp_path):
    store = DatasetStore(tmp_path / "store")
    assert store.list() == []
    a = store.import_file(write(tmp_path / "up", "a.csv", GOOD))
    b = store.import_file(write(tmp_path / "up", "b.csv", GOOD + "fine,pos\n"), text_column="text")
    assert {e.sha256 for e in store.list()} == {a.sha256, b.sha256}
    assert store.get("0" * 64) is None
    with pytest.raises(ValueError):
        store.get("../../etc")


def test_shared_file_roundtrip(tmp_path):
    src = Path(shutil.copy(SHARED / "financial_phrasebank.csv", tmp_path / "fpb.csv"))
    entry = DatasetStore(tmp_path / "store").import_file(src)
    assert entry.path.read_bytes() == src.read_bytes()
    assert entry.meta["encoding"] == "latin-1" and entry.meta["rows"] == 4846
    assert len(entry.load()) == 4846


BAD = [
    ("bad.csv", b"text,label\nhello,a\nbad \x81\x00 bytes,b\n", {}, "encoding"),
    ("ragged.csv", "text,label\na,x\nb,y\nc,x,extra\n", {}, "ragged_row"),
    ("broken.jsonl", '{"text": "a", "label": "x"}\n' * 16 + '{"text": \n', {}, "bad_json"),
    ("empty.csv", b"", {}, "empty_file"),
    ("c.csv", GOOD, {"label_column": "sentiment"}, "missing_column"),
    ("big.csv", GOOD * 100, {"limits": DataLimits(max_bytes=100)}, "too_large"),
]


@pytest.mark.parametrize("name, content, kwargs, code", BAD, ids=[b[0] for b in BAD])
def test_bad_file_stores_nothing(tmp_path, name, content, kwargs, code):
    root = tmp_path / "store"
    store = DatasetStore(root)
    with pytest.raises(DataError) as info:
        store.import_file(write(tmp_path / "up", name, content), **kwargs)
    assert info.value.codes[0] == code
    if code == "bad_json":
        assert info.value.issues[0].line == 17 and "line 17" in str(info.value)
    assert files_under(root) == [] and store.list() == []


def test_meta_json_named_upload_does_not_clash(tmp_path):
    content = json.dumps([{"text": "a b", "label": "x"}, {"text": "c d", "label": "y"}])
    entry = DatasetStore(tmp_path / "store").import_file(write(tmp_path / "up", "meta.json", content))
    assert entry.path.name == "original_meta.json" and entry.meta["name"] == "meta.json"
    assert entry.load().labels == ["x", "y"]
