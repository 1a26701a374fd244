"""Delimited text (CSV, TSV, semicolon or pipe separated) into columns and rows.

Why not csv.Sniffer: it guesses from a small sample, often picks a letter or a space as
the delimiter, and calls a header present or absent on weak evidence. Here every
candidate delimiter is tried on a sample and scored on how consistently it splits rows,
then quoting is checked (files such as the SMS corpus use literal quotes that would
swallow whole lines under CSV quoting), then the header is decided from the values.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass

from .errors import error, format_lines
from .numbers import is_number_literal

DELIMITERS = [",", "\t", ";", "|"]
_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
SAMPLE_LINES = 2000
# Raised from csv's 128 KiB default: one long document in a cell is legitimate.
_FIELD_LIMIT = 16 * 1024 * 1024
# A header cell is a short name; a value longer than this is data.
_MAX_HEADER_LEN = 60


@dataclass
class Table:
    """A parsed file before columns are chosen: every cell is a string."""
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]           # physical 1-based line each row starts on
    detail: str = ""           # how it was read, e.g. "tab-delimited, no header"


def parse_delimited(text: str, *, preferred: str | None, max_rows: int,
                    header_hint: set[str] = frozenset()) -> Table:
    """Parse delimited text; `preferred` is the extension's delimiter, `header_hint` names
    the user asked for (if the first row holds them, it is a header)."""
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)
    delimiter = detect_delimiter(text, preferred)
    records, quoting = _parse_with_quoting(text, delimiter, max_rows)
    if not records:
        raise error("empty_file", "the file has no rows.", "Upload a file with one example per row.")
    width = _expected_width(records)
    _check_ragged(records, width, delimiter)
    records = [(line, fields[:width]) for line, fields in records]
    has_header = looks_like_header(records, header_hint)
    columns = make_column_names(records[0][1] if has_header else [], width)
    body = records[1:] if has_header else records
    detail = f"{_NAMES[delimiter]}-delimited, {'header' if has_header else 'no header'}"
    if quoting == csv.QUOTE_NONE:
        detail += ", quotes kept literally"
    return Table(columns, [f for _, f in body], [ln for ln, _ in body], detail)


def detect_delimiter(text: str, preferred: str | None) -> str:
    """The candidate that splits the sample into the same number (>= 2) of fields most often."""
    sample, truncated = _sample(text)
    scores = {}
    for delim in DELIMITERS:
        best = 0.0
        for quoting in (csv.QUOTE_MINIMAL, csv.QUOTE_NONE):
            records = list(_records(sample, delim, quoting, strict=False, max_rows=None))
            if truncated and len(records) > 1:
                records = records[:-1]   # the cut may fall inside the last record
            best = max(best, _consistency(records))
        scores[delim] = best
    # Ties go to the extension's delimiter, then to the usual order.
    order = ([preferred] if preferred else []) + DELIMITERS
    return max(order, key=lambda d: (round(scores[d], 3), -order.index(d)))


def _consistency(records: list[tuple[int, list[str]]]) -> float:
    counts = Counter(len(f) for _, f in records)
    if not counts:
        return 0.0
    width, n = counts.most_common(1)[0]
    return n / len(records) if width >= 2 else 0.0


def _sample(text: str) -> tuple[str, bool]:
    pos = 0
    for _ in range(SAMPLE_LINES):
        pos = text.find("\n", pos) + 1
        if pos == 0:
            return text, False
    return text[:pos], pos < len(text)


def _parse_with_quoting(text: str, delim: str, max_rows: int):
    """Standard CSV quoting unless it visibly breaks the file and literal quotes do not.

    Signs that quoting breaks the file: a quoted field followed by more text (strict mode
    error), rows of different widths, or fields spanning lines; then the file is re-read
    with quotes as plain characters, and that reading is kept only if every row fits.
    """
    try:
        quoted = list(_records(text, delim, csv.QUOTE_MINIMAL, strict=True, max_rows=max_rows))
        suspicious = not _is_even(quoted) or any("\n" in v or "\r" in v for _, f in quoted for v in f)
    except csv.Error:
        quoted, suspicious = None, True
    if quoted is not None and not suspicious:
        return quoted, csv.QUOTE_MINIMAL
    literal = list(_records(text, delim, csv.QUOTE_NONE, strict=False, max_rows=max_rows))
    if _is_even(literal) and _expected_width(literal) >= 2:
        return literal, csv.QUOTE_NONE
    if quoted is None:
        quoted = list(_records(text, delim, csv.QUOTE_MINIMAL, strict=False, max_rows=max_rows))
    # Both readings have bad rows: report from the one with fewer, its line numbers are
    # the ones the user will recognise (standard quoting wins ties).
    if _ragged_count(literal) < _ragged_count(quoted):
        return literal, csv.QUOTE_NONE
    return quoted, csv.QUOTE_MINIMAL


def _ragged_count(records) -> int:
    if not records:
        return 0
    width = _expected_width(records)
    return sum(1 for _, f in records if len(f) != width and not _only_blank_extras(f, width))


def _is_even(records) -> bool:
    return _ragged_count(records) == 0


def _records(text: str, delim: str, quoting: int, *, strict: bool, max_rows: int | None):
    """Yield (start line, fields) per record, skipping blank lines.

    csv.reader's line_num counts physical lines consumed, so a record starts one line
    after the previous record ended; newline='' keeps \\r\\n inside quoted fields intact.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, quoting=quoting,
                        strict=strict, skipinitialspace=False)
    end = 0
    count = 0
    for fields in reader:
        start, end = end + 1, reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        count += 1
        if max_rows is not None and count > max_rows + 1:   # +1: the header
            raise _too_many_rows(max_rows)
        yield start, fields


def _too_many_rows(max_rows: int):
    return error("too_large", f"the file has more than {max_rows:,} rows.",
                 "Use a sample of the data, or raise the limit with DataLimits(max_rows=...).")


def _expected_width(records) -> int:
    """The field count most rows have (ties: the wider), so one odd header or row
    does not define the table."""
    counts = Counter(len(f) for _, f in records)
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def _only_blank_extras(fields: list[str], width: int) -> bool:
    # "a,b," lines from spreadsheets: an empty trailing cell is not a real extra field.
    return len(fields) > width and all(not v.strip() for v in fields[width:])


def _check_ragged(records, width: int, delim: str) -> None:
    bad = [(line, len(f)) for line, f in records
           if len(f) != width and not _only_blank_extras(f, width)]
    if not bad:
        return
    line, got = bad[0]
    others = f" Other rows with the wrong count: {format_lines([b[0] for b in bad[1:]])}." \
        if len(bad) > 1 else ""
    name = _NAMES[delim]
    raise error(
        "ragged_row",
        f"line {line} has {got} fields but the file has {width} columns ({name}-delimited).{others}",
        f"Put double quotes around values that contain a {name} or a line break, or remove "
        f"the extra {name}s on line {line}, so every row has {width} fields.",
        lines=[b[0] for b in bad[:1000]], count=len(bad))


def looks_like_header(records, header_hint: set[str] = frozenset()) -> bool:
    """Is the first record a header? Data-looking values say no: a number, a long
    sentence, or a value that recurs in the same column below (e.g. a label such as
    'ham' in the SMS corpus)."""
    first = [v.strip() for v in records[0][1]]
    if header_hint and {v.lower() for v in first} & {h.lower() for h in header_hint}:
        return True
    if len(records) == 1:
        # A lone row is a header only if it reads like names.
        return all(v and len(v) <= _MAX_HEADER_LEN and not is_number_literal(v) for v in first)
    for value in first:
        if len(value) > _MAX_HEADER_LEN or is_number_literal(value):
            return False
    below = records[1:1 + SAMPLE_LINES * 5]
    for i, value in enumerate(first):
        if value and any(i < len(f) and f[i].strip() == value for _, f in below):
            return False
    names = [v for v in first if v]
    return bool(names) and len(set(names)) == len(names)


def make_column_names(header: list[str], width: int) -> list[str]:
    """Header cells cleaned up; blank or missing ones become column_N, repeats get _2."""
    names, seen = [], Counter()
    for i in range(width):
        name = header[i].strip() if i < len(header) else ""
        name = name or f"column_{i + 1}"
        seen[name] += 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return names
