"""Check a parsed dataset before anyone pays for training on it.

Errors are problems that make training or evaluation wrong or impossible (empty texts,
missing labels, a class with one example, a single class). Warnings are problems that
make the result less trustworthy (duplicates, train/test leakage, imbalance,
truncation). Every issue names its lines and says what to do about it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable

from .dataset import TextDataset
from .errors import Issue, format_lines
from .stats import stats_from_lengths, text_lengths

# Largest class over smallest above this is "heavy" imbalance.
IMBALANCE_RATIO = 10
# Issues keep at most this many line numbers (count keeps the true total), so a report
# on a 2-million-row file stays small.
MAX_LINES_KEPT = 1000


@dataclass
class Report:
    issues: list[Issue]
    stats: dict

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> list[str]:
        return [i.code for i in self.issues]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "issues": [i.to_dict() for i in self.errors + self.warnings],
                "stats": self.stats}

    def render(self) -> str:
        """Human-readable report, errors first."""
        train = self.stats.get("train", {})
        head = (f"{len(self.errors)} error(s), {len(self.warnings)} warning(s) in "
                f"{train.get('rows', 0):,} training rows, {train.get('num_labels', 0)} labels")
        if "test" in self.stats:
            head += f"; {self.stats['test']['rows']:,} test rows"
        out = [head + "."]
        for title, group in (("Errors", self.errors), ("Warnings", self.warnings)):
            if group:
                out.append(f"{title}:")
                out.extend("  " + str(issue).replace("\n", "\n  ") for issue in group)
        if self.ok:
            out.append("The data can be used for training.")
        return "\n".join(out)


def validate(train: TextDataset, test: TextDataset | None = None, *, max_length: int | None = None,
             count_tokens: Callable[[list[str]], list[int]] | None = None) -> Report:
    files = [(train, "train")] + ([(test, "test")] if test is not None else [])
    issues: list[Issue] = []
    stats = {}
    for ds, name in files:
        lengths, unit = text_lengths(ds, count_tokens)
        stats[name] = stats_from_lengths(ds, lengths, unit)
        issues += check_empty_texts(ds, name) + check_missing_labels(ds, name)
        if max_length is not None and count_tokens is not None:
            issues += check_too_long(ds, lengths, max_length, name)
    issues += check_rare_labels(train) + check_single_class(train)
    # Without a test file, training drops the repeats itself (strategies/classification.dedupe).
    issues += check_duplicates(train, "train", dropped=test is None)
    issues += check_imbalance(train)
    if test is not None:
        issues += check_duplicates(test, "test") + check_leakage(train, test)
        issues += check_unseen_labels(train, test)
    # Errors first; within a severity, the order the checks ran.
    issues.sort(key=lambda i: i.severity != "error")
    return Report(issues, stats)


def _issue(severity, code, message, fix, lines, *, file=None, column=None, count=None) -> Issue:
    return Issue(severity, code, message, fix, line=lines[0] if lines else None, column=column,
                 count=len(lines) if count is None else count, lines=lines[:MAX_LINES_KEPT],
                 file=file)


def _key(text: str) -> str:
    # Duplicates differ only by spacing often enough (copy-paste, exports) to count them.
    return " ".join(text.split())


def check_empty_texts(ds: TextDataset, file: str) -> list[Issue]:
    lines = [e.line for e in ds.examples if not e.text.strip()]
    if not lines:
        return []
    return [_issue("error", "empty_text", f"{len(lines):,} row(s) have an empty text.",
                   f"Fill in the text on {format_lines(lines)} or delete those rows.",
                   lines, file=file, column=ds.text_column)]


def check_missing_labels(ds: TextDataset, file: str) -> list[Issue]:
    lines = [e.line for e in ds.examples if not e.label.strip()]
    if not lines:
        return []
    return [_issue("error", "missing_label", f"{len(lines):,} row(s) have no label.",
                   f"Add the label on {format_lines(lines)}, or delete those rows.",
                   lines, file=file, column=ds.label_column)]


def check_rare_labels(ds: TextDataset) -> list[Issue]:
    counts = Counter(e.label for e in ds.examples if e.label)
    rare = sorted(label for label, n in counts.items() if n < 2)
    if not rare:
        return []
    rare_set = set(rare)
    lines = sorted(e.line for e in ds.examples if e.label in rare_set)
    shown = ", ".join(f'"{r}"' for r in rare[:10]) + (f" and {len(rare) - 10} more" if len(rare) > 10 else "")
    return [_issue("error", "rare_label",
                   f"{len(rare)} label(s) have a single example: {shown}. A class needs examples "
                   "to learn from and to be tested on.",
                   "Add at least one more example of each (ideally 10+), or drop those rows or "
                   "merge the label into a related one.",
                   lines, file="train", column=ds.label_column)]


def check_single_class(ds: TextDataset) -> list[Issue]:
    labels = {e.label for e in ds.examples if e.label}
    if len(labels) != 1:
        return []
    only = next(iter(labels))
    return [_issue("error", "single_class",
                   f'every labelled row has the label "{only}": there is nothing to tell apart.',
                   "Add examples of at least one other class, or check that the label column "
                   f'("{ds.label_column}") is the right one.', [], file="train",
                   column=ds.label_column, count=len(ds))]


def check_duplicates(ds: TextDataset, file: str, *, dropped: bool = False) -> list[Issue]:
    """`dropped`: training removes the repeats itself (one copy of each text and label is kept), so
    the report says so rather than asking the user to delete them."""
    groups: dict[str, list] = defaultdict(list)
    for e in ds.examples:
        if e.text.strip():
            groups[_key(e.text)].append(e)
    repeats, conflicts, conflict_texts = [], [], 0
    for group in groups.values():
        if len(group) < 2:
            continue
        if len({e.label for e in group}) == 1:
            repeats += [e.line for e in group[1:]]      # the first occurrence is kept
        else:
            conflicts += [e.line for e in group]
            conflict_texts += 1
    issues = []
    if repeats:
        repeats.sort()
        if dropped:
            message = (f"{len(repeats):,} row(s) repeat an earlier row (same text and label). Training on "
                       "this file alone keeps the first occurrence and drops the repeats before the "
                       "split, so they neither weigh more nor land in both train and test.")
            fix = (f"Nothing to do: the repeats ({format_lines(repeats)}) are dropped automatically. "
                   "(With a separate test file they are kept: delete them if they are copies.)")
        elif file == "test":
            message = (f"{len(repeats):,} test row(s) repeat an earlier row (same text and label): each "
                       "copy counts again in the test score.")
            fix = f"Delete the repeated rows ({format_lines(repeats)}) if they are copies; the first occurrence is enough."
        else:
            message = (f"{len(repeats):,} row(s) repeat an earlier row (same text and label); with a "
                       "separate test file they are kept, so those examples weigh more in training.")
            fix = f"Delete the repeated rows ({format_lines(repeats)}) if they are copies; the first occurrence is enough."
        issues.append(_issue("warning", "duplicate", message, fix, repeats, file=file, column=ds.text_column))
    if conflicts:
        conflicts.sort()
        issues.append(_issue(
            "warning", "conflicting_duplicate", f"{conflict_texts:,} text(s) appear with "
            f"different labels ({len(conflicts):,} rows): the model cannot get all of them right.",
            f"Decide on one label for each such text ({format_lines(conflicts)}) and fix or "
            "delete the others.", conflicts, file=file, column=ds.text_column))
    return issues


def check_leakage(train: TextDataset, test: TextDataset) -> list[Issue]:
    seen = {_key(e.text) for e in train.examples if e.text.strip()}
    lines = [e.line for e in test.examples if e.text.strip() and _key(e.text) in seen]
    if not lines:
        return []
    share = len(lines) / max(len(test), 1)
    return [_issue("warning", "leakage",
                   f"{len(lines):,} test row(s) ({share:.1%}) also appear in the training "
                   "data, so test scores would overstate quality on new texts.",
                   f"Remove those rows ({format_lines(lines)} of the test file) from the test "
                   "file or from the training file.", lines, file="test", column=test.text_column)]


def check_imbalance(ds: TextDataset) -> list[Issue]:
    counts = Counter(e.label for e in ds.examples if e.label)
    counts = {k: v for k, v in counts.items() if v >= 2}   # single examples: rare_label says it
    if len(counts) < 2:
        return []
    big = max(counts, key=lambda k: (counts[k], k))
    small = min(counts, key=lambda k: (counts[k], k))
    ratio = counts[big] / counts[small]
    if ratio <= IMBALANCE_RATIO:
        return []
    return [_issue("warning", "imbalance",
                   f'classes are heavily imbalanced: "{big}" has {counts[big]:,} examples, '
                   f'"{small}" only {counts[small]:,} ({ratio:.0f}x).',
                   f'Add examples of "{small}" and other small classes, or judge models on macro-F1 '
                   "(not accuracy), which the comparison reports.", [], file="train",
                   column=ds.label_column, count=len(counts))]


def check_too_long(ds: TextDataset, lengths: list[int], max_length: int, file: str) -> list[Issue]:
    lines = [e.line for e, n in zip(ds.examples, lengths) if n > max_length]
    if not lines:
        return []
    share = len(lines) / max(len(ds), 1)
    return [_issue("warning", "too_long",
                   f"{len(lines):,} text(s) ({share:.1%}) are longer than the model's "
                   f"{max_length} tokens and would be truncated (the end is cut off).",
                   "Pick a model with a longer max length, raise max_length, or shorten or "
                   "split those texts if their end matters for the label.",
                   lines, file=file, column=ds.text_column)]


def check_unseen_labels(train: TextDataset, test: TextDataset) -> list[Issue]:
    known = {e.label for e in train.examples}
    unseen = sorted({e.label for e in test.examples if e.label and e.label not in known})
    if not unseen:
        return []
    unseen_set = set(unseen)
    lines = [e.line for e in test.examples if e.label in unseen_set]
    shown = ", ".join(f'"{u}"' for u in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
    return [_issue("warning", "unseen_label",
                   f"{len(unseen)} test label(s) never appear in the training data: {shown}. "
                   "No model can predict them, so those rows count as errors.",
                   "Add training examples of those labels, or check the two files use the same "
                   "label names (spelling, case).", lines, file="test", column=test.label_column)]
