"""Every parser and pattern the readers apply to users' data, on inputs built to make them
backtrack or loop: each finishes within a bound a linear parser meets with room to spare.

Before the fix, the header sniffer's `\\d+\\.?\\d*` took 0.7 s on 4,000 digits and a letter,
2.1 s on 8,000 and 11.4 s on 16,000 (quadratic or worse, holding the GIL); a JSON integer of
5,000 digits or arrays nested 100,000 deep escaped as ValueError/RecursionError (a 500)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.data import DataError
from tunelab.data.columns import _tokens, profile_columns
from tunelab.data.delimited import looks_like_header, parse_delimited
from tunelab.data.encoding import decode
from tunelab.data.generative import _records
from tunelab.data.numbers import MAX_NUMBER_CHARS, integral_float, is_decimal, is_number_literal
from tunelab.data.readers import DataLimits, _label, parse_data
from tunelab.data.structured import parse_fasttext, parse_json, parse_jsonl

# A linear pass over a megabyte takes milliseconds; the old sniffer took seconds on 1/50 of it.
BOUND_S = 1.5
N = 20_000
MB = 1 << 20
LIMITS = DataLimits(max_bytes=64 * MB, max_rows=10_000_000)

HOSTILE = {
    "digits_then_letter": "1" * N + "x",
    "digit_dot_pairs": "1." * N,
    "digits_dot_digits_letter": "1" * N + "." + "1" * N + "x",
    "exponent_run": "+" + "1" * N + "e" + "1" * N + "x",
    "dot_then_digits": "." + "1" * N + "x",
    "signs": "+-" * N,
    "blank_run": " " * N + "x",
    "unicode_digits": "\u0663" * N + "x",
}

CALLS = {
    "is_number_literal": is_number_literal,
    "is_decimal": is_decimal,
    "integral_float": integral_float,
    "label": _label,
    "header_lone_row": lambda v: looks_like_header([(1, [v])]),
    "header_two_rows": lambda v: looks_like_header([(1, [v, "a"]), (2, ["b", "c"])]),
    "profile_columns": lambda v: profile_columns(["c"], [[v]] * 50),
    "column_tokens": lambda v: _tokens(v + "aA_" * (N // 3)),
    "parse_delimited": lambda v: parse_delimited(f"{v},pos\nb,neg\n", preferred=",", max_rows=10),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_pattern_on_hostile_cell_is_linear(call, text):
    start = time.perf_counter()
    call(text)
    assert time.perf_counter() - start < BOUND_S


FILES = {
    "one_mb_cell.csv": b"1" * MB + b"x",
    "one_mb_cell_two_cols.csv": b"1" * MB + b"x,pos\nb,neg\nc,pos\nd,neg\n",
    "one_mb_dot_pairs.tsv": b"1." * (MB // 2) + b"\tpos\nb\tneg\n",
    "blanks_in_array.json": b"[" + b" \n" * (MB // 2) + b"]",
    "blank_lines.jsonl": b"\n" * MB + b'{"text": "a", "label": "b"}\n',
    "fasttext_spaces.txt": b"__label__a " + b" " * MB + b"x\n",
    "cp1252_run.csv": b"caf\xe9 " * (MB // 5) + b",pos\nb,neg\n",
}


@pytest.mark.parametrize("name", FILES, ids=FILES.keys())
def test_reader_on_hostile_megabyte_is_linear(name):
    suffix = "." + name.rsplit(".", 1)[1]
    readers = [lambda: parse_data(FILES[name], name, limits=LIMITS)]
    if suffix in (".json", ".jsonl"):
        readers.append(lambda: _records(decode(FILES[name])[0], suffix))     # the generative reader
    for read in readers:
        start = time.perf_counter()
        try:
            read()
        except DataError:
            pass                      # refused with a reason is fine; what is measured is the time
        assert time.perf_counter() - start < 2 * BOUND_S


@pytest.mark.parametrize("call", [
    lambda t: parse_json(t, max_rows=10), lambda t: parse_jsonl(t, max_rows=10),
    lambda t: _records(t, ".json"), lambda t: _records(t, ".jsonl"),
], ids=["parse_json", "parse_jsonl", "generative_json", "generative_jsonl"])
@pytest.mark.parametrize("text", ["[" * 100_000, '[{"text": "a", "label": ' + "1" * 5000 + "}]"],
                         ids=["nesting", "huge_integer"])
def test_json_parser_limits_are_data_errors(call, text):
    with pytest.raises(DataError) as info:
        call(text)
    assert info.value.codes == ["bad_json"]


def test_fasttext_on_long_lines_is_linear():
    text = ("__label__a " + "w " * (MB // 4) + "\n") * 2
    start = time.perf_counter()
    parse_fasttext(text, max_rows=10)
    assert time.perf_counter() - start < 2 * BOUND_S


def test_a_label_with_thousands_of_digits_stays_text():
    value = "1" * 5000 + ".0"             # int() of it raised ValueError: a 500 on upload
    assert _label(value) == value
    assert _label("+007.000") == "7" and _label("-3.") == "-3" and _label("2.5") == "2.5"


# The regexes these checks replace, as the specification they must still agree with (on cells
# short enough to be number-sniffed at all).
OLD_LITERAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
OLD_DECIMAL = re.compile(r"[+-]?\d+(\.\d+)?")
OLD_INTEGRAL = re.compile(r"([+-]?\d+)\.0*")
CELLS = st.text(alphabet="0123456789+-.eE x\u0663\u00b2", max_size=24)


@settings(max_examples=1000, deadline=None)
@given(CELLS)
def test_number_checks_agree_with_the_regexes_they_replace(cell):
    assert is_number_literal(cell) == bool(OLD_LITERAL.fullmatch(cell))
    assert is_decimal(cell) == bool(OLD_DECIMAL.fullmatch(cell))
    old = OLD_INTEGRAL.fullmatch(cell)
    assert integral_float(cell) == (str(int(old.group(1))) if old else None)


def test_long_cells_are_never_numbers():
    assert not is_number_literal("1" * (MAX_NUMBER_CHARS + 1))
    assert is_number_literal("1" * MAX_NUMBER_CHARS)
