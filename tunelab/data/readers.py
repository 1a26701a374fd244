"""Read a user's file (CSV/TSV/TXT/JSON/JSONL/Parquet/Excel .xlsx) into a `TextDataset`.

The reader is lenient about shape (delimiters, headers, encodings, column names) and
strict about meaning: anything it cannot read unambiguously raises `DataError` with the
line and a fix. Row-level problems (empty text, missing label) are kept, not raised, so
validation can list every one of them with its line.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .columns import choose_columns
from .dataset import Example, TextDataset
from .delimited import Table, parse_delimited
from .encoding import decode
from .errors import error
from .numbers import integral_float
from .structured import FASTTEXT_PREFIX, parse_fasttext, parse_json, parse_jsonl, parse_parquet
from .xlsx import SUFFIXES as _WORKBOOKS, is_workbook, parse_xlsx, single_sheet

ENV_MAX_UPLOAD_MB = "TUNELAB_MAX_UPLOAD_MB"
ENV_MAX_ROWS = "TUNELAB_MAX_ROWS"

_DELIMITED = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": None, ".psv": "|"}
_JSON = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SPREADSHEETS = {".xls", ".ods", ".numbers"}     # .xlsx/.xlsm are read (data/xlsx.py)
_PARQUET_MAGIC = b"PAR1"
# Magic numbers of containers that are not data files we read (zip/xlsx, gzip, bzip2, 7z, pdf).
_CONTAINERS = {b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "gzip",
               b"BZh": "bzip2", b"7z\xbc\xaf": "7-Zip", b"%PDF": "a PDF document",
               b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook"}


@dataclass(frozen=True)
class DataLimits:
    max_bytes: int = 200 * 1024 * 1024
    max_rows: int = 2_000_000

    @classmethod
    def from_env(cls) -> "DataLimits":
        """Defaults, overridden by TUNELAB_MAX_UPLOAD_MB / TUNELAB_MAX_ROWS when set."""
        default = cls()
        mb = _env_number(ENV_MAX_UPLOAD_MB)
        rows = _env_number(ENV_MAX_ROWS)
        return cls(max_bytes=int(mb * 1024 * 1024) if mb is not None else default.max_bytes,
                   max_rows=int(rows) if rows is not None else default.max_rows)


def _env_number(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


@dataclass
class ParsedFile:
    """Everything the reader learnt about a file, for callers that need more than examples."""
    dataset: TextDataset
    columns: list[str]
    detail: str
    data: bytes = field(default=b"", repr=False)   # the exact bytes that were hashed


def read_table(path: str | Path, *, text_column: str | None = None,
               label_column: str | None = None, limits: DataLimits | None = None,
               sheet: str | None = None) -> TextDataset:
    """Read a labelled text file; raise DataError when it cannot be read as one."""
    return parse_file(path, text_column=text_column, label_column=label_column,
                      limits=limits, sheet=sheet).dataset


def parse_file(path: str | Path, *, text_column: str | None = None,
               label_column: str | None = None, limits: DataLimits | None = None,
               sheet: str | None = None) -> ParsedFile:
    """`read_table` plus the file's full column list and how it was read."""
    path = Path(path)
    limits = limits or DataLimits.from_env()
    return parse_data(read_bytes(path, limits), path.name, text_column=text_column, label_column=label_column,
                      limits=limits, sheet=sheet)


def parse_data(data: bytes, name: str, *, text_column: str | None = None, label_column: str | None = None,
               limits: DataLimits | None = None, sheet: str | None = None) -> ParsedFile:
    """`parse_file` on bytes already in memory (e.g. decrypted); `name` gives the format hint.
    `sheet` (an Excel workbook's sheet by name; else the first with data): the workbook is reduced
    to that sheet, and those are the bytes hashed and kept (`ParsedFile.data`)."""
    path = Path(name)
    limits = limits or DataLimits.from_env()
    if sheet is not None:
        if not is_workbook(data):
            raise error("not_a_workbook", f"a sheet was chosen (\"{sheet[:100]}\") but {path.name} is not an Excel "
                        "workbook.", "Leave the sheet empty for CSV, JSON and Parquet files.")
        data = single_sheet(data, sheet, max_rows=limits.max_rows)
    fmt, table, encoding = _parse(data, path.suffix.lower(), limits,
                                  {n for n in (text_column, label_column) if n})
    if not table.rows:
        raise error("empty_file", "the file has a header but no data rows.",
                    "Add one example per row below the header.")
    text_idx, label_idx = choose_columns(table.columns, table.rows, text_column=text_column,
                                         label_column=label_column)
    examples = [Example(_cell(row, text_idx), _label(_cell(row, label_idx)), line)
                for row, line in zip(table.rows, table.lines)]
    dataset = TextDataset(examples, table.columns[text_idx], table.columns[label_idx],
                          source=path.name, sha256=hashlib.sha256(data).hexdigest(),
                          format=fmt, encoding=encoding)
    return ParsedFile(dataset, table.columns, table.detail, data)


def read_bytes(path: Path, limits: DataLimits) -> bytes:
    """The file's bytes, refusing before reading anything when it is over the size limit."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise error("too_large",
                    f"{path.name} is {_mb(size)}, over the upload limit of {_mb(limits.max_bytes)}.",
                    f"Upload a sample of the data, or raise the limit: set {ENV_MAX_UPLOAD_MB} "
                    f"(in MB, e.g. {ENV_MAX_UPLOAD_MB}={int(size / 2**20) + 1}) or pass "
                    "DataLimits(max_bytes=...).")
    data = path.read_bytes()
    # Only a blank head can mean a blank file: avoid copying 200 MB to find out.
    if not data[:65536].strip() and not data.strip():
        raise error("empty_file", f"{path.name} is empty.", "Upload a file with one example per row.")
    return data


def _mb(n: int) -> str:
    """A human size: limits are set in MB, but a tiny test limit should not read '0.0 MB'."""
    if n < 1024:
        return f"{n} bytes"
    if n < 2**20:
        return f"{n / 1024:.1f} KB"
    return f"{n / 2**20:.1f} MB"


def _parse(data: bytes, suffix: str, limits: DataLimits, hint: set[str]) -> tuple[str, Table, str]:
    """(format, table, encoding): the extension decides, content sniffing backs it up."""
    if is_workbook(data) or (suffix in _WORKBOOKS and data.startswith(b"PK")):
        return "xlsx", parse_xlsx(data, max_rows=limits.max_rows, header_hint=hint), "binary"
    _refuse_containers(data, suffix)
    if suffix == ".parquet" or data.startswith(_PARQUET_MAGIC):
        return "parquet", parse_parquet(data, max_rows=limits.max_rows), "binary"
    text, encoding = decode(data)
    fmt = _JSON.get(suffix) or _sniff_text_format(text, suffix)
    if fmt == "json":
        table = parse_json(text, max_rows=limits.max_rows)
        return table.detail, table, encoding          # "json" or "jsonl" when it was lines
    if fmt == "jsonl":
        return "jsonl", _parse_jsonl_or_array(text, limits), encoding
    if fmt == "fasttext":
        return "fasttext", parse_fasttext(text, max_rows=limits.max_rows), encoding
    table = parse_delimited(text, preferred=_DELIMITED.get(suffix), max_rows=limits.max_rows,
                            header_hint=hint)
    return ("tsv" if table.detail.startswith("tab") else "csv"), table, encoding


def _refuse_containers(data: bytes, suffix: str) -> None:
    kind = next((name for magic, name in _CONTAINERS.items() if data.startswith(magic)), None)
    if suffix in _SPREADSHEETS or kind:
        raise error("unsupported_format",
                    f"this file is {kind or 'a spreadsheet workbook'}, not a data file we can read.",
                    "Export it as CSV UTF-8, JSON Lines, Parquet or Excel .xlsx (in Excel or "
                    "LibreOffice: File > Save As > 'CSV UTF-8' or 'Excel Workbook'); decompress "
                    "archives first.")


def _sniff_text_format(text: str, suffix: str) -> str:
    """fastText if it starts with __label__; for extensions we do not know (or none) JSON
    if it starts like JSON; else delimited."""
    start = _head(text)
    if start.startswith(FASTTEXT_PREFIX):
        return "fasttext"
    if suffix in _DELIMITED:
        return "delimited"
    # "{" may also start JSON Lines: parse_json falls back to them on several documents.
    return "json" if start[:1] in ("[", "{") else "delimited"


def _head(text: str) -> str:
    # The first characters after leading blanks, without copying a 200 MB string.
    return text[:4096].lstrip()


def _parse_jsonl_or_array(text: str, limits: DataLimits) -> Table:
    # A .jsonl that actually holds one JSON array (a common mix-up) still reads.
    if _head(text).startswith("["):
        return parse_json(text, max_rows=limits.max_rows)
    return parse_jsonl(text, max_rows=limits.max_rows)


def _cell(row: list[str], index: int) -> str:
    return row[index].strip() if index < len(row) else ""


def _label(value: str) -> str:
    # Labels written as floats by pandas (1.0, 0.0 after a NaN) mean the integer class.
    return integral_float(value) or value
