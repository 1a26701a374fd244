"""Reading users' files: the shared real datasets, every supported shape, every refusal."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from tunelab.data import DataError, DataLimits, Issue, read_table
from tunelab.data.readers import parse_file

SHARED = Path("/work/shared/datasets/text-classification")


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def copy_shared(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copy(SHARED / name, tmp_path / name))


def raises_code(path: Path, code: str, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        read_table(path, **kwargs)
    assert info.value.codes[0] == code, str(info.value)
    return info.value


# --- the shared real files ---------------------------------------------------------------

@pytest.mark.parametrize("name, text_col, label_col, rows, num_labels, encoding, fmt", [
    ("sms_spam.tsv", "column_2", "column_1", 5574, 2, "utf-8", "tsv"),
    ("financial_phrasebank.csv", "content", "label", 4846, 3, "latin-1", "csv"),
    ("banking77_train.csv", "text", "category", 10003, 77, "utf-8", "csv"),
    ("banking77_test.csv", "text", "category", 3080, 77, "utf-8", "csv"),
])
def test_shared_files_import(tmp_path, name, text_col, label_col, rows, num_labels, encoding, fmt):
    ds = read_table(copy_shared(tmp_path, name))
    assert (ds.text_column, ds.label_column) == (text_col, label_col)
    assert (len(ds), len(ds.label_names), ds.encoding, ds.format) == (rows, num_labels, encoding, fmt)
    assert ds.source == name and len(ds.sha256) == 64
    assert all(e.text for e in ds.examples) and all(e.label for e in ds.examples)
    lines = [e.line for e in ds.examples]
    assert lines == sorted(set(lines))


def test_sms_is_headerless_with_literal_quotes(tmp_path):
    ds = read_table(copy_shared(tmp_path, "sms_spam.tsv"))
    assert ds.label_names == ["ham", "spam"]
    assert sum(1 for e in ds.examples if e.label == "spam") == 747
    # Headerless: row N is on line N; line 283 starts with a quote that is part of the text.
    assert [e.line for e in ds.examples[:3]] == [1, 2, 3]
    assert ds.examples[282].line == 283 and ds.examples[282].text.startswith('"Wen u miss someone')
    assert ds.examples[282].text.endswith('Keep-in-touch" gdeve..')


def test_phrasebank_decodes_latin1(tmp_path):
    ds = read_table(copy_shared(tmp_path, "financial_phrasebank.csv"))
    assert ds.label_names == ["negative", "neutral", "positive"]
    # The file's only non-ASCII bytes: 0xD1 0xF3 (line 2106) and 0xAA 0xCD (line 3854).
    by_line = {e.line: e.text for e in ds.examples}
    assert "Tel+Ñóaco Borba" in by_line[2106]
    assert "-ªÍ volume" in by_line[3854]
    assert "\ufffd" not in "".join(ds.texts)


def test_banking_multiline_records_keep_their_start_line(tmp_path):
    path = copy_shared(tmp_path, "banking77_train.csv")
    ds = read_table(path)
    physical = path.read_text(encoding="utf-8").splitlines()
    assert len(physical) == 10017 and ds.examples[-1].line == 10017
    for e in ds.examples[::97]:
        first = physical[e.line - 1]
        assert first.startswith('"') or first.startswith(e.text[:10]), (e, first)
    # Quoted fields that begin with line breaks are stripped to their text.
    assert "I can't seem to be able to use my card" in ds.texts


# --- formats and shapes --------------------------------------------------------------------

TWO = [("good product", "pos"), ("bad product", "neg"), ("great value", "pos"), ("awful", "neg")]


def _parquet_bytes(tmp_path: Path) -> bytes:
    import pandas as pd
    path = tmp_path / "x.parquet"
    pd.DataFrame({"sentence": [t for t, _ in TWO], "target": [1, 0, 1, 0]}).to_parquet(path)
    return path.read_bytes()


FORMAT_CASES = [
    # name, content, text col, label col, format, encoding
    ("semi.csv", "text;label\n" + "".join(f"{t};{l}\n" for t, l in TWO), "text", "label", "csv", "utf-8"),
    ("tabs.tsv", "sentence\tsentiment\n" + "".join(f"{t}\t{l}\n" for t, l in TWO),
     "sentence", "sentiment", "tsv", "utf-8"),
    ("bom.csv", b"\xef\xbb\xbftext,label\n" + "".join(f"{t},{l}\n" for t, l in TWO).encode(),
     "text", "label", "csv", "utf-8-sig"),
    ("noheader.csv", "".join(f"{t},{l}\n" for t, l in TWO), "column_1", "column_2", "csv", "utf-8"),
    ("pipes.txt", "label|text\n" + "".join(f"{l}|{t}\n" for t, l in TWO), "text", "label", "csv", "utf-8"),
    ("crlf.csv", "text,label\r\n" + "".join(f"{t},{l}\r\n" for t, l in TWO), "text", "label", "csv", "utf-8"),
    ("list.json", json.dumps([{"text": t, "label": l} for t, l in TWO]), "text", "label", "json", "utf-8"),
    ("wrapped.json", json.dumps({"version": 2, "data": [{"content": t, "class": l} for t, l in TWO]}),
     "content", "class", "json", "utf-8"),
    ("columnar.json", json.dumps({"utterance": [t for t, _ in TWO], "intent": [l for _, l in TWO]}),
     "utterance", "intent", "json", "utf-8"),
    ("lines.jsonl", "".join(json.dumps({"message": t, "y": l}) + "\n" for t, l in TWO),
     "message", "y", "jsonl", "utf-8"),
    ("lines.ndjson", "\n".join(json.dumps({"text": t, "label": l}) for t, l in TWO),
     "text", "label", "jsonl", "utf-8"),
    ("fast.txt", "".join(f"__label__{l} {t}\n" for t, l in TWO), "text", "label", "fasttext", "utf-8"),
    ("sniffed.dat", json.dumps([{"text": t, "label": l} for t, l in TWO]), "text", "label", "json", "utf-8"),
    ("no_extension", "text,label\n" + "".join(f"{t},{l}\n" for t, l in TWO), "text", "label", "csv", "utf-8"),
]


@pytest.mark.parametrize("name, content, text_col, label_col, fmt, encoding", FORMAT_CASES,
                         ids=[c[0] for c in FORMAT_CASES])
def test_formats(tmp_path, name, content, text_col, label_col, fmt, encoding):
    ds = read_table(write(tmp_path, name, content))
    assert (ds.text_column, ds.label_column, ds.format, ds.encoding) == (text_col, label_col, fmt, encoding)
    assert [(e.text, e.label) for e in ds.examples] == TWO


def test_parquet_with_numeric_labels(tmp_path):
    ds = read_table(write(tmp_path, "data.parquet", _parquet_bytes(tmp_path)))
    assert (ds.text_column, ds.label_column, ds.format) == ("sentence", "target", "parquet")
    assert ds.labels == ["1", "0", "1", "0"] and ds.examples[0].line == 1


def test_custom_column_names_detected_among_others(tmp_path):
    rows = [(i, f"review number {i} says the thing was {'fine' if i % 2 else 'not fine at all'}",
             str(1 + i % 5), "2024-01-0" + str(1 + i % 9)) for i in range(40)]
    content = "review_id,review_body,stars,date\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    ds = read_table(write(tmp_path, "amazon.csv", content))
    assert (ds.text_column, ds.label_column) == ("review_body", "stars")
    assert ds.label_names == ["1", "2", "3", "4", "5"]


def test_pandas_index_column_and_float_labels(tmp_path):
    content = ",text,label\n" + "".join(f"{i},{t},{1.0 if l == 'pos' else 0.0}\n" for i, (t, l) in enumerate(TWO))
    ds = read_table(write(tmp_path, "pandas.csv", content))
    assert (ds.text_column, ds.label_column) == ("text", "label")
    assert ds.labels == ["1", "0", "1", "0"]


@pytest.mark.parametrize("raw, encoding, expected", [
    ("text,label\nprice 5€ café,a\nnaïve “quote”,b\nok,a\nfine,b\n".encode("cp1252"), "cp1252", "price 5€ café"),
    ("text,label\nMäkelä Oyj,a\nÅbo,b\nok,a\nfine,b\n".encode("latin-1"), "latin-1", "Mäkelä Oyj"),
    ("text,label\nMäkelä 5€,a\nÅbo,b\nok,a\nfine,b\n".encode("utf-16"), "utf-16", "Mäkelä 5€"),
])
def test_legacy_encodings(tmp_path, raw, encoding, expected):
    ds = read_table(write(tmp_path, "legacy.csv", raw))
    assert ds.encoding == encoding and ds.texts[0] == expected


def test_quoted_fields_and_line_numbers(tmp_path):
    content = 'text,label\n"hello, world",a\n"two\nline text",b\n"say ""hi""",a\n\nlast,b\n'
    ds = read_table(write(tmp_path, "q.csv", content))
    assert [(e.text, e.line) for e in ds.examples] == [
        ("hello, world", 2), ("two\nline text", 3), ('say "hi"', 5), ("last", 7)]


def test_empty_cells_are_kept_for_validation(tmp_path):
    ds = read_table(write(tmp_path, "holes.csv", "text,label\nhello,a\n,b\nbye,\nok,a\nfine,b\n"))
    assert [(e.text, e.label, e.line) for e in ds.examples][1:3] == [("", "b", 3), ("bye", "", 4)]


def test_explicit_columns_case_insensitive(tmp_path):
    ds = read_table(write(tmp_path, "c.csv", "Title,Body,Label\n" + "".join(f"t{i},{t},{l}\n" for i, (t, l) in enumerate(TWO))),
                    text_column="title", label_column="LABEL")
    assert (ds.text_column, ds.label_column, ds.texts[0]) == ("Title", "Label", "t0")


# --- refusals ------------------------------------------------------------------------------

def _jsonl_broken_at_17() -> str:
    good = [json.dumps({"text": f"text {i}", "label": "ab"[i % 2]}) for i in range(1, 17)]
    return "\n".join(good) + '\n{"text": "broken", "label": \n' + json.dumps({"text": "x", "label": "a"}) + "\n"


ERROR_CASES = [
    # name, content, code, line, words the message must contain
    ("bad.csv", b"text,label\nhello,a\nbad \x81\x00 bytes,b\n", "encoding", 3, ["line 3", "UTF-8"]),
    ("binary.csv", random.Random(0).randbytes(4096), "encoding", None, ["UTF-8"]),
    ("nul.csv", b"text,label\nok,a\nx\x00y,b\n", "encoding", 3, ["NUL"]),
    ("ragged.csv", "text,label\na,x\nb,y\nc,x,extra\nd,y\n", "ragged_row", 4, ["line 4", "3 fields", "2 columns"]),
    ("broken.jsonl", _jsonl_broken_at_17(), "bad_json", 17, ["line 17"]),
    ("broken.json", '[{"text": "a", "label": "x"},\n {"text": "b" "label": "y"}]', "bad_json", 2, []),
    ("scalars.json", '["just", "strings"]', "bad_json", 1, ["record 1"]),
    ("empty.csv", b"", "empty_file", None, []),
    ("blank.csv", "\n \n", "empty_file", None, []),
    ("header_only.csv", "text,label\n", "empty_file", None, []),
    ("book.xlsx", b"PK\x03\x04" + b"\x00" * 64, "unsupported_format", None, ["CSV"]),
    ("one_column.csv", "text\nhello\nworld\n", "no_label_column", None, ["Columns found: text"]),
    ("unique.csv", "a,b\n" + "".join(f"row {i},other {i}\n" for i in range(10)), "no_label_column", None, []),
    ("numbers.csv", "label,score\na,1\nb,2\na,3\nb,4\n", "no_text_column", None, []),
]


@pytest.mark.parametrize("name, content, code, line, words", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_files(tmp_path, name, content, code, line, words):
    err = raises_code(write(tmp_path, name, content), code)
    issue = err.issues[0]
    assert issue.severity == "error" and issue.fix
    if line is not None:
        assert issue.line == line
    for word in words:
        assert word in str(err)


def test_missing_column_lists_available(tmp_path):
    path = write(tmp_path, "c.csv", "text,label\n" + "".join(f"{t},{l}\n" for t, l in TWO))
    err = raises_code(path, "missing_column", label_column="sentiment")
    assert err.issues[0].column == "sentiment"
    assert "text, label" in str(err) and "Fix:" in str(err)


def test_too_large_refused_before_reading(tmp_path, monkeypatch):
    path = write(tmp_path, "big.csv", "text,label\n" + "hello,a\n" * 5000)

    def no_read(self):
        raise AssertionError("the file must not be read")
    monkeypatch.setattr(Path, "read_bytes", no_read)
    err = raises_code(path, "too_large", limits=DataLimits(max_bytes=1024))
    assert "TUNELAB_MAX_UPLOAD_MB" in str(err)
    assert "big.csv is 39.1 KB, over the upload limit of 1.0 KB" in str(err)


def test_too_many_rows(tmp_path):
    path = write(tmp_path, "rows.csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(50)))
    raises_code(path, "too_large", limits=DataLimits(max_rows=10))


def test_limits_from_env(monkeypatch):
    monkeypatch.setenv("TUNELAB_MAX_UPLOAD_MB", "3")
    monkeypatch.setenv("TUNELAB_MAX_ROWS", "1000")
    assert DataLimits.from_env() == DataLimits(max_bytes=3 * 1024 * 1024, max_rows=1000)
    monkeypatch.setenv("TUNELAB_MAX_UPLOAD_MB", "lots")
    with pytest.raises(ValueError, match="TUNELAB_MAX_UPLOAD_MB"):
        DataLimits.from_env()


def test_issue_and_error_shapes():
    issue = Issue("error", "ragged_row", "line 4 has 3 fields", "quote it", line=4, column="text")
    assert issue.to_dict()["lines"] == [4] and issue.to_dict()["code"] == "ragged_row"
    text = str(DataError([issue]))
    assert "line 4" in text and 'column "text"' in text and "Fix: quote it" in text


def test_parse_file_reports_all_columns(tmp_path):
    parsed = parse_file(write(tmp_path, "c.csv", "id,text,label\n" + "".join(f"{i},{t},{l}\n" for i, (t, l) in enumerate(TWO))))
    assert parsed.columns == ["id", "text", "label"] and "comma" in parsed.detail


def test_mostly_utf8_with_stray_cp1252_bytes(tmp_path):
    raw = ("text,label\n" + "café crème naïve,a\n" * 3).encode() + b"price 5\x80 caf\xe9,b\nok,b\n"
    ds = read_table(write(tmp_path, "mixed.csv", raw))
    assert ds.encoding == "utf-8+cp1252"
    assert ds.texts[0] == "café crème naïve" and ds.texts[3] == "price 5€ café"
