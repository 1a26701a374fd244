"""A classification run's results in a person's words, from its confusion matrix and label names.

Pure: metrics in, sentences out; no I/O and nothing about who shows them. The web's job page and a
comparison's winner render `summarize(metrics)`:

- `overall`: how many test rows got the right label.
- `lines`: per label, what happened to its test rows. Two labels: the rarer one is "the one to
  catch" ("Of 20 "spam" rows, 17 were caught and 3 missed; 1 of 120 "ham" rows was flagged as
  "spam"."). More: "12 of 15 "card_arrival" rows were recognised; most often confused with
  "card_not_working" (2)."
- `weakest`: up to 3 labels (of two, one) with the lowest F1 that are not perfect, each with a few
  of its test errors (stored by `error_examples` at evaluation time).
- `needs`: what a better model would need: more training rows of the weak labels that have fewer
  than the average label, or, when they are not short of rows, cleaner examples.
- `thin`: a warning when the test split is too small for the score to be sharp.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from ..data.minimums import MINIMUMS

MAX_EXAMPLES_PER_LABEL = 3
MAX_EXAMPLES = 30
MAX_TEXT = 160
WEAKEST = 3
THIN_TEST_ROWS = MINIMUMS.thin_test_rows      # one place for the number: data/minimums.py


def _q(label: str) -> str:
    return f"\u201c{label}\u201d"


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def truncate(text: str, limit: int = MAX_TEXT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def error_examples(texts: list[str], true_ids: list[int], pred_ids: list[int], names: list[str],
                   per_label: int = MAX_EXAMPLES_PER_LABEL, limit: int = MAX_EXAMPLES) -> list[dict]:
    """A few misclassified test rows ({text (truncated), true, predicted}), at most `per_label` of
    each true label and `limit` in all, in test order: what a run keeps to show its errors."""
    out, seen = [], Counter()
    for text, t, p in zip(texts, true_ids, pred_ids):
        if t == p or t >= len(names) or p >= len(names) or seen[t] >= per_label:
            continue
        seen[t] += 1
        out.append({"text": truncate(text), "true": names[t], "predicted": names[p]})
        if len(out) >= limit:
            break
    return out


@dataclass
class Weak:
    label: str
    f1: float
    recall: float
    support: int
    train_rows: int | None
    examples: list[dict] = field(default_factory=list)


@dataclass
class Summary:
    overall: str
    lines: list[str]
    weakest: list[Weak]
    needs: str | None
    thin: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(metrics: dict, thin_test_rows: int = THIN_TEST_ROWS) -> Summary | None:
    """The run's results in words; None when the metrics carry no confusion matrix (other tasks,
    an empty test split)."""
    cm = metrics.get("confusion_matrix") or {}
    labels, matrix = list(cm.get("labels") or []), cm.get("matrix") or []
    if len(labels) < 2 or len(matrix) != len(labels):
        return None
    support = [sum(row) for row in matrix]
    total = sum(support)
    if total == 0:
        return None
    right = sum(matrix[i][i] for i in range(len(labels)))
    overall = f"{right:,} of {total:,} test rows ({100 * right / total:.0f}%) got the right label."
    lines = _binary_lines(labels, matrix, support) if len(labels) == 2 else _multi_lines(labels, matrix, support)
    weakest = _weakest(labels, matrix, support, metrics)
    return Summary(overall, lines, weakest, _needs(weakest, metrics), _thin(total, thin_test_rows))


def _binary_lines(labels: list[str], matrix: list[list[int]], support: list[int]) -> list[str]:
    # The rarer label is the one a person wants caught (spam, fraud, a complaint); on a tie, the second.
    pos = 0 if support[0] < support[1] else 1
    neg = 1 - pos
    caught, missed = matrix[pos][pos], matrix[pos][neg]
    flagged = matrix[neg][pos]
    first = (f"Of {support[pos]:,} {_q(labels[pos])} test rows, {caught:,} "
             f"{'was' if caught == 1 else 'were'} caught and {missed:,} missed" if support[pos]
             else f"No test row was {_q(labels[pos])}")
    verb = "was" if flagged == 1 else "were"
    return [f"{first}; {flagged:,} of {support[neg]:,} {_q(labels[neg])} rows {verb} wrongly flagged as "
            f"{_q(labels[pos])}."]


def _multi_lines(labels: list[str], matrix: list[list[int]], support: list[int]) -> list[str]:
    lines = []
    for i, name in enumerate(labels):
        if not support[i]:
            lines.append(f"{_q(name)} had no test row.")
            continue
        hit = matrix[i][i]
        text = f"{hit:,} of {support[i]:,} {_q(name)} rows {'was' if hit == 1 else 'were'} recognised"
        wrong = [(matrix[i][j], j) for j in range(len(labels)) if j != i and matrix[i][j]]
        if wrong:
            n, j = max(wrong, key=lambda c: (c[0], -c[1]))
            text += f"; most often confused with {_q(labels[j])} ({n:,})"
        lines.append(text + ".")
    return lines


def _f1(matrix: list[list[int]], i: int, support: list[int]) -> float:
    predicted = sum(row[i] for row in matrix)
    denom = support[i] + predicted
    return 2 * matrix[i][i] / denom if denom else 0.0


def _weakest(labels: list[str], matrix: list[list[int]], support: list[int], metrics: dict) -> list[Weak]:
    train = metrics.get("train_label_counts") or {}
    examples = metrics.get("error_examples") or []
    scored = []
    for i, name in enumerate(labels):
        f1 = _f1(matrix, i, support)
        if f1 >= 1.0 or not (support[i] or sum(row[i] for row in matrix)):
            continue
        recall = matrix[i][i] / support[i] if support[i] else 0.0
        scored.append(Weak(name, f1, recall, support[i], train.get(name),
                           [e for e in examples if e.get("true") == name][:MAX_EXAMPLES_PER_LABEL]))
    scored.sort(key=lambda w: (w.f1, w.recall, w.label))
    return scored[:min(WEAKEST, len(labels) - 1)]       # of two labels, the weaker one


def _needs(weakest: list[Weak], metrics: dict) -> str | None:
    train = {k: int(v) for k, v in (metrics.get("train_label_counts") or {}).items()}
    if not weakest:
        return None
    if not train:
        return f"More training examples of {_and([_q(w.label) for w in weakest])} would help most."
    mean = sum(train.values()) / len(train)
    short = [w for w in weakest if w.train_rows is not None and w.train_rows < mean]
    if short:
        counts = _and([f"{w.train_rows:,}" for w in short])
        have = "it has" if len(short) == 1 else "they have"
        return (f"More examples of {_and([_q(w.label) for w in short])} would help most: {have} {counts} "
                f"training row{'' if len(short) == 1 and short[0].train_rows == 1 else 's'} against "
                f"{mean:,.0f} on average per label.")
    names = _and([_q(w.label) for w in weakest])
    return (f"{names} {'is' if len(weakest) == 1 else 'are'} not short of examples (at least the average of "
            f"{mean:,.0f} training rows a label): check that their rows are labelled consistently, and "
            "look at the errors below for a pattern the labels do not capture.")


def _thin(test_rows: int, thin_test_rows: int) -> str | None:
    if test_rows >= thin_test_rows:
        return None
    return (f"Measured on only {_rows(test_rows)}: the score's 95% interval is wide, so treat it as a "
            f"rough guide; {thin_test_rows} or more test rows give a sharper one.")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
