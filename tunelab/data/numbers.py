"""Does a cell look like a number? Answered in time linear in the cell, with no regex.

Why not regexes: `\\d+\\.?\\d*` (the old header sniffer's) backtracks quadratically on a cell of
digits followed by a letter, and the re module holds the GIL while it does, so one hostile CSV
cell of 16,000 digits froze the whole server (API, worker heartbeats) for seconds. These
checks split the cell with str methods (each one pass in C) and look at no more than
MAX_NUMBER_CHARS characters: a longer cell is text, whatever its characters.

`str.isdecimal()` is exactly the `\\d` of a str regex (Unicode category Nd), so the answers are
those of the regexes they replace (tests/test_data_numbers.py checks them against each other).
"""

from __future__ import annotations

# Longer than any number a person writes into a cell (a 20-digit id, a float's 17 digits and
# exponent): such a value is data to read as text, never number-sniffed.
MAX_NUMBER_CHARS = 64
# The longest integer part an integral float label ("3.0") is rewritten for: int() of a longer
# one would be refused by Python's 4,300-digit conversion limit, and no class is numbered so.
_MAX_LABEL_DIGITS = 40


def _unsigned(value: str) -> str:
    return value[1:] if value[:1] in ("+", "-") else value


def is_decimal(value: str) -> bool:
    """`[+-]?\\d+(\\.\\d+)?`: an integer or a decimal with digits on both sides of the point."""
    if len(value) > MAX_NUMBER_CHARS:
        return False
    whole, dot, fraction = _unsigned(value).partition(".")
    return whole.isdecimal() and (not dot or fraction.isdecimal())


def is_number_literal(value: str) -> bool:
    """`[+-]?(\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?`: what a spreadsheet writes for a number
    ("12", "1.", ".5", "-3.2e-4")."""
    if len(value) > MAX_NUMBER_CHARS:
        return False
    body = _unsigned(value)
    cut = min((i for i in (body.find("e"), body.find("E")) if i >= 0), default=len(body))
    mantissa, exponent = body[:cut], body[cut + 1:]
    if cut < len(body) and not _unsigned(exponent).isdecimal():
        return False
    whole, dot, fraction = mantissa.partition(".")
    if whole:
        return whole.isdecimal() and (not fraction or fraction.isdecimal())
    return bool(dot) and fraction.isdecimal()


def integral_float(value: str) -> str | None:
    """ "3.0", "+3.", "-03.00" -> the integer's text ("3", "3", "-3"); None for anything else
    (`[+-]?\\d+\\.0*` as pandas writes integer labels after a NaN)."""
    whole, dot, zeros = value.partition(".")
    digits = _unsigned(whole)
    if not dot or zeros.strip("0") or len(digits) > _MAX_LABEL_DIGITS or not digits.isdecimal():
        return None
    return str(int(whole))
