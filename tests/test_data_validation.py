"""Validation reports and dataset statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.data import Example, TextDataset, compute_stats, read_table, validate


def make(rows: list[tuple[str, str]], first_line: int = 2) -> TextDataset:
    """A dataset as a CSV with a header would give it: row i on line i + first_line."""
    return TextDataset([Example(t, l, i + first_line) for i, (t, l) in enumerate(rows)], "text", "label")


def balanced(n: int = 10, labels: str = "ab") -> list[tuple[str, str]]:
    return [(f"sample text number {i}", labels[i % len(labels)]) for i in range(n)]


def codes(report) -> list[str]:
    return [i.code for i in report.issues]


def only(report, code):
    found = [i for i in report.issues if i.code == code]
    assert len(found) == 1, report.render()
    return found[0]


def test_clean_data_is_ok():
    report = validate(make(balanced()))
    assert report.ok and report.issues == []
    assert "can be used" in report.render()


def test_empty_text_names_its_line(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nhello there,a\nbye now,b\n,a\nagain,b\nmore,a\n", encoding="utf-8")
    report = validate(read_table(path))
    issue = only(report, "empty_text")
    assert issue.severity == "error" and issue.lines == [4] and issue.column == "text"
    assert not report.ok and "line 4" in report.render()


def test_missing_label():
    rows = balanced() + [("no label here", "")]
    issue = only(validate(make(rows)), "missing_label")
    assert issue.lines == [12] and issue.severity == "error"


def test_rare_label():
    rows = balanced() + [("lonely example", "c")]
    report = validate(make(rows))
    issue = only(report, "rare_label")
    assert issue.severity == "error" and issue.lines == [12] and '"c"' in issue.message
    assert "add" in issue.fix.lower() and "drop" in issue.fix.lower()


def test_single_class_from_file(tmp_path: Path):
    path = tmp_path / "one.csv"
    path.write_text("text,label\n" + "".join(f"text {i},spam\n" for i in range(6)), encoding="utf-8")
    report = validate(read_table(path, label_column="label"))
    assert only(report, "single_class").severity == "error" and not report.ok


def test_duplicates_and_conflicts():
    rows = balanced() + [("sample text number 0", "a"), ("sample  text number 0 ", "a"),
                         ("sample text number 1", "a")]
    report = validate(make(rows))
    dup = only(report, "duplicate")
    assert dup.severity == "warning" and dup.lines == [12, 13]
    conflict = only(report, "conflicting_duplicate")
    assert conflict.lines == [3, 14] and report.ok


def test_duplicates_report_says_what_the_platform_does_with_them():
    rows = balanced() + [("sample text number 0", "a")]
    alone = only(validate(make(rows)), "duplicate")          # one file: training drops the repeats
    assert "dropped automatically" in alone.fix and "drops the repeats" in alone.message
    assert not alone.fix.startswith("Delete")
    with_test = validate(make(rows), make(balanced(4) + [("sample text number 1", "b")]))
    train_dup = next(i for i in with_test.issues if i.code == "duplicate" and i.file == "train")
    test_dup = next(i for i in with_test.issues if i.code == "duplicate" and i.file == "test")
    assert "they are kept" in train_dup.message and train_dup.fix.startswith("Delete")
    assert "test score" in test_dup.message


def test_leakage_lists_test_lines():
    train = make(balanced(20))
    test = make([("sample text number 3", "b"), ("fresh text", "a"), ("sample text number 7", "b")])
    issue = only(validate(train, test), "leakage")
    assert issue.file == "test" and issue.count == 2 and issue.lines == [2, 4]
    assert "2 test row(s)" in issue.message


@pytest.mark.parametrize("big, small, warned", [(110, 10, True), (100, 10, False), (30, 3, False)])
def test_imbalance(big, small, warned):
    rows = [(f"x {i}", "a") for i in range(big)] + [(f"y {i}", "b") for i in range(small)]
    report = validate(make(rows))
    assert ("imbalance" in codes(report)) is warned
    if warned:
        issue = only(report, "imbalance")
        assert f"{big}" in issue.message and f"{small}" in issue.message


def test_too_long_with_fake_tokenizer():
    rows = balanced(8) + [("word " * 50, "a"), ("word " * 30, "b")]
    def count_tokens(texts):
        return [len(t.split()) * 2 for t in texts]    # pretend each word is two tokens
    report = validate(make(rows), max_length=64, count_tokens=count_tokens)
    issue = only(report, "too_long")
    assert issue.count == 1 and issue.lines == [10] and "64" in issue.message
    assert report.stats["train"]["length_unit"] == "tokens"
    assert "too_long" not in codes(validate(make(rows), max_length=64))   # needs a tokenizer


def test_unseen_test_label():
    issue = only(validate(make(balanced()), make([("whatever", "c"), ("x", "a")])), "unseen_label")
    assert issue.lines == [2] and issue.severity == "warning"


def test_render_errors_first_and_truncates_lines():
    rows = balanced(40) + [("", "a")] * 25 + [("dup", "a"), ("dup", "a")]
    report = validate(make(rows))
    text = report.render()
    assert text.index("Errors:") < text.index("Warnings:")
    assert "and 15 more" in text
    data = report.to_dict()
    json.dumps(data)
    assert data["ok"] is False and data["issues"][0]["severity"] == "error"
    assert {"code", "message", "fix", "line", "lines", "count"} <= set(data["issues"][0])


def test_every_issue_has_a_fix():
    rows = [("", "a"), ("x", ""), ("dup", "a"), ("dup", "b"), ("one", "c")] + [(f"z{i}", "a") for i in range(40)]
    report = validate(make(rows), make([("dup", "a"), ("n", "q")]), max_length=1,
                      count_tokens=lambda ts: [len(t) for t in ts])
    assert len(set(codes(report))) >= 7
    assert all(i.fix and i.message for i in report.issues)


def test_compute_stats():
    rows = [("one two three", "a"), ("one", "b"), ("one two", "a"), ("a b c d e f", "c"), ("x y", "a")]
    stats = compute_stats(make(rows))
    assert stats["rows"] == 5 and stats["num_labels"] == 3
    assert list(stats["label_counts"].items()) == [("a", 3), ("b", 1), ("c", 1)]
    assert stats["length_unit"] == "words"
    assert stats["length"] == {"mean": 2.8, "p50": 2, "p95": 6, "max": 6}
    hist = stats["histogram"]
    assert sum(hist["counts"]) == 5 and len(hist["bins"]) == len(hist["counts"]) + 1
    tok = compute_stats(make(rows), count_tokens=lambda ts: [len(t) for t in ts])
    assert tok["length_unit"] == "tokens" and tok["length"]["max"] == len("one two three")


def test_compute_stats_empty():
    stats = compute_stats(make([]))
    assert stats["rows"] == 0 and stats["histogram"] == {"bins": [], "counts": []}
