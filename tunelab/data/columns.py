"""Which column holds the text and which the label.

Users name columns every way there is (`review_body`/`stars`, `utterance`/`intent`,
headerless `column_1`/`column_2`), so names only break ties: the decision rests on the
values. A label column has few distinct, short values compared with the number of rows;
the text column is the one with the longest values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import error
from .numbers import is_decimal

LABEL_NAMES = ("label", "labels", "category", "class", "intent", "target", "sentiment", "y",
               "rating", "stars", "tag", "topic", "emotion", "polarity", "genre")
TEXT_NAMES = ("text", "content", "sentence", "message", "body", "document", "utterance",
              "review", "query", "question", "comment", "tweet", "sms", "description")
# A label value longer than this is a sentence, not a class name.
MAX_LABEL_LEN = 64
_ID_TOKENS = {"id", "idx", "index", "uuid", "key"}


@dataclass
class ColumnProfile:
    name: str
    index: int
    filled: int          # non-empty values
    distinct: int
    mean_len: float
    max_len: int
    numeric: bool        # every non-empty value is a number


def profile_columns(columns: list[str], rows: list[list[str]], sample: int = 20000) -> list[ColumnProfile]:
    """Per-column statistics over (at most) the first `sample` rows."""
    part = rows[:sample]
    profiles = []
    for i, name in enumerate(columns):
        values = [r[i].strip() for r in part if i < len(r) and r[i].strip()]
        lengths = [len(v) for v in values]
        profiles.append(ColumnProfile(
            name, i, len(values), len(set(values)),
            sum(lengths) / len(values) if values else 0.0, max(lengths, default=0),
            bool(values) and all(map(is_decimal, values))))
    return profiles


def resolve_name(wanted: str, columns: list[str], role: str) -> int:
    """Index of a user-named column: exact match first, then case/space-insensitive."""
    if wanted in columns:
        return columns.index(wanted)
    folded = [c.strip().casefold() for c in columns]
    if wanted.strip().casefold() in folded:
        return folded.index(wanted.strip().casefold())
    raise error("missing_column",
                f'the {role} column "{wanted}" is not in the file. Columns found: '
                f"{', '.join(columns)}.",
                f"Pass one of these as {role}_column (names are case-insensitive).",
                column=wanted)


def choose_columns(columns: list[str], rows: list[list[str]], *, text_column: str | None = None,
                   label_column: str | None = None) -> tuple[int, int]:
    """(text index, label index): the user's names when given, else detected."""
    text_idx = resolve_name(text_column, columns, "text") if text_column else None
    label_idx = resolve_name(label_column, columns, "label") if label_column else None
    if text_idx is not None and text_idx == label_idx:
        raise error("no_label_column", f'"{columns[text_idx]}" was given as both the text and '
                    "the label column.", "Name two different columns.", column=columns[text_idx])
    profiles = profile_columns(columns, rows)
    if label_idx is None:
        label_idx = _detect_label(profiles, exclude=text_idx, rows=len(rows), columns=columns)
    if text_idx is None:
        text_idx = _detect_text(profiles, exclude=label_idx, columns=columns)
    return text_idx, label_idx


def _tokens(name: str) -> set[str]:
    # review_body, reviewBody, "Review Body" -> {"review", "body"}. Both patterns are single
    # character classes with no adjacent quantifiers: linear on any name a file brings.
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return {t for t in re.split(r"[^0-9a-zA-Z]+", spaced.lower()) if t}


def _name_rank(name: str, preferred: tuple[str, ...]) -> int:
    """2: the name is a preferred word; 1: it contains one (and is no id); 0: neither."""
    folded = name.strip().lower()
    if folded in preferred:
        return 2
    tokens = _tokens(name)
    return 1 if tokens & set(preferred) and not tokens & _ID_TOKENS else 0


def _is_label_like(p: ColumnProfile, rows: int) -> bool:
    if p.filled == 0 or p.max_len > MAX_LABEL_LEN * 2 or p.mean_len > MAX_LABEL_LEN:
        return False
    if _name_rank(p.name, LABEL_NAMES) == 2:
        # A column literally called "label" is the label even in a tiny file where every
        # value is unique; validation then says "one example per label", which is the
        # real problem, instead of "no label column".
        return True
    if p.distinct == p.filled and p.filled > 1:        # every value unique: an id or a text
        return False
    # "Few distinct values relative to rows": at most half the rows (tiny files: 2 classes).
    return p.distinct <= max(2, rows // 2)


def _detect_label(profiles: list[ColumnProfile], *, exclude: int | None, rows: int,
                  columns: list[str]) -> int:
    candidates = [p for p in profiles if p.index != exclude and _is_label_like(p, rows)]
    if not candidates:
        raise error("no_label_column",
                    f"no column looks like a label (a few distinct short values repeated over "
                    f"the rows). Columns found: {', '.join(columns)}.",
                    "Add a label column, or pass label_column=<name> to say which one it is.")
    # Preferred names first, then the fewest distinct values per row; leftmost on ties.
    best = max(candidates, key=lambda p: (_name_rank(p.name, LABEL_NAMES),
                                          -p.distinct / max(p.filled, 1), -p.index))
    return best.index


def _detect_text(profiles: list[ColumnProfile], *, exclude: int, columns: list[str]) -> int:
    candidates = [p for p in profiles if p.index != exclude and p.filled and not p.numeric]
    if not candidates:
        raise error("no_text_column",
                    f"no column besides the label holds text. Columns found: {', '.join(columns)}.",
                    "Add a column with the text to classify, or pass text_column=<name>.")
    longest = max(p.mean_len for p in candidates)
    # A preferred name wins only when its values are text-sized, so that e.g. a short
    # `message_type` column never beats the real text.
    named = [p for p in candidates
             if _name_rank(p.name, TEXT_NAMES) and p.mean_len >= 0.5 * longest]
    pool = named or candidates
    best = max(pool, key=lambda p: (_name_rank(p.name, TEXT_NAMES), p.mean_len, -p.index))
    return best.index
