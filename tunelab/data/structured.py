"""JSON, JSON Lines, Parquet (and fastText lines) into the same column/row `Table` delimited files give.

JSON comes in several everyday shapes; all of these are accepted:
  [{"text": ..., "label": ...}, ...]              a list of records
  {"data": [{...}, ...]}                          one key holding the list (HF/Kaggle dumps)
  {"text": [...], "label": [...]}                 columns of equal length (pandas orient=list)
  [["some text", "pos"], ...]                     a list of rows without names
fastText's `__label__pos some text` lines are read here too.
Line numbers: JSONL rows carry their physical line; JSON array records and Parquet rows
carry their position (index + 1), as `Example.line` documents.
"""

from __future__ import annotations

import io
import json
import math
from contextlib import contextmanager

from .delimited import Table, make_column_names
from .errors import error

FASTTEXT_PREFIX = "__label__"
_JSON_FIX = "Check the file with a JSON validator (e.g. `python -m json.tool FILE`) and fix the syntax."


def parse_json(text: str, *, max_rows: int) -> Table:
    """A whole-file JSON document; a file of several documents is read as JSON Lines."""
    try:
        with json_limits():
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Extra data"):
            return parse_jsonl(text, max_rows=max_rows)
        raise _bad_json(exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    records = _find_records(data)
    _check_rows(len(records), max_rows)
    return _records_to_table(records, list(range(1, len(records) + 1)), "json")


def parse_jsonl(text: str, *, max_rows: int) -> Table:
    """One JSON object per line; blank lines are skipped, a broken line is named."""
    records, lines = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            with json_limits(number):
                record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _bad_json(number, f"line {number} is not valid JSON: {exc.msg} "
                                    f"(column {exc.colno}).") from None
        records.append(record)
        lines.append(number)
        _check_rows(len(records), max_rows)
    return _records_to_table(records, lines, "jsonl")


def parse_fasttext(text: str, *, max_rows: int) -> Table:
    """fastText's `__label__pos some text` lines. A line without a label is kept with an
    empty label so validation names it; on multi-label lines the first label is used."""
    rows, lines = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if not tokens:
            continue
        labels = [t[len(FASTTEXT_PREFIX):] for t in tokens if t.startswith(FASTTEXT_PREFIX)]
        words = [t for t in tokens if not t.startswith(FASTTEXT_PREFIX)]
        rows.append([" ".join(words), labels[0] if labels else ""])
        lines.append(number)
        _check_rows(len(rows), max_rows)
    return Table(["text", "label"], rows, lines, "fasttext")


def parse_parquet(data: bytes, *, max_rows: int) -> Table:
    import pyarrow.parquet as pq   # imported here: only Parquet uploads pay for it

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise error("unsupported_format", f"the Parquet file could not be read: {exc}.",
                    "Re-export the file (pandas: df.to_parquet(path)) or save it as CSV.") from None
    _check_rows(table.num_rows, max_rows)
    names = [str(c) for c in table.column_names]
    columns = make_column_names(names, len(names))
    values = [table.column(i).to_pylist() for i in range(len(names))]
    rows = [[to_text(col[r]) for col in values] for r in range(table.num_rows)]
    return Table(columns, rows, list(range(1, table.num_rows + 1)), "parquet")


def _find_records(data) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1:                      # {"data": [...]} plus optional metadata keys
            return next(iter(lists.values()))
        if lists and len(lists) == len(data) and len({len(v) for v in lists.values()}) == 1:
            keys = list(lists)                   # {"text": [...], "label": [...]}
            return [dict(zip(keys, vals)) for vals in zip(*lists.values())]
        raise error("unsupported_format",
                    f"the JSON object has keys {', '.join(map(str, data)) or '(none)'} but no "
                    "single list of records.",
                    'Use a list of records: [{"text": "...", "label": "..."}, ...], or JSON Lines.')
    raise error("unsupported_format", f"the JSON file holds a single {type(data).__name__}, "
                "not a list of records.", 'Use [{"text": "...", "label": "..."}, ...].')


def _records_to_table(records: list, lines: list[int], fmt: str) -> Table:
    if not records:
        raise error("empty_file", "the JSON file has no records.", "Add one record per example.")
    if all(isinstance(r, list) for r in records):
        width = max(len(r) for r in records)
        rows = [[to_text(v) for v in r] + [""] * (width - len(r)) for r in records]
        return Table(make_column_names([], width), rows, lines, fmt)
    columns: dict[str, None] = {}                # union of keys, first-seen order
    for record, line in zip(records, lines):
        if not isinstance(record, dict):
            where = f"line {line}" if fmt == "jsonl" else f"record {line}"
            raise _bad_json(line, f"{where} is a JSON {type(record).__name__}, not an object "
                                  "with named fields.")
        columns.update(dict.fromkeys(map(str, record)))
    names = list(columns)
    rows = [[to_text(r.get(k)) for k in names] for r in records]   # JSON keys are strings
    return Table(names, rows, lines, fmt)


def _check_rows(n: int, max_rows: int) -> None:
    if n > max_rows:
        raise error("too_large", f"the file has more than {max_rows:,} rows.",
                    "Use a sample of the data, or raise the limit with DataLimits(max_rows=...).")


@contextmanager
def json_limits(line: int | None = None):
    """Python's JSON parser stops at its own limits with RecursionError (arrays nested about a
    thousand deep) or ValueError (an integer over 4,300 digits): both are a bad file (422 with the
    line), not a crash (500). Syntax errors (JSONDecodeError) pass through for the caller's report."""
    where = f"line {line}: " if line else ""
    try:
        yield
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise _bad_json(line or 1, f"{where}the JSON nests arrays or objects too deeply to read.") from None
    except ValueError:
        raise _bad_json(line or 1, f"{where}the JSON holds an integer with more than 4,300 digits.") from None


def _bad_json(line: int, message: str):
    return error("bad_json", message, _JSON_FIX, line=line)


def to_text(value) -> str:
    """A cell as text: missing -> "", 1 and 1.0 -> "1", true -> "true", nested -> JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
