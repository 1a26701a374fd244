"""The results in a person's words (evaluation/summary.py), checked against confusion matrices; and
the minimums a run needs (data/minimums.py), with the split arithmetic they share with split_dataset."""

from __future__ import annotations

import pytest

from tunelab.data import TextDataset, split_dataset
from tunelab.data.dataset import Example
from tunelab.data.minimums import MINIMUMS, THIN, TOO_LITTLE, planned_issues, splits_issues
from tunelab.data.split import limit_counts, split_counts, stratified_limit
from tunelab.evaluation.summary import error_examples, summarize


def q(label: str) -> str:
    return f"\u201c{label}\u201d"


def metrics(labels, matrix, train=None, errors=None):
    return {"confusion_matrix": {"labels": labels, "matrix": matrix}, "train_label_counts": train or {},
            "error_examples": errors or []}


# (labels, matrix rows = true, columns = predicted, the expected sentences)
CASES = [
    (["ham", "spam"], [[119, 1], [3, 17]],
     "136 of 140 test rows (97%) got the right label.",
     [f"Of 20 {q('spam')} test rows, 17 were caught and 3 missed; 1 of 120 {q('ham')} rows was wrongly "
      f"flagged as {q('spam')}."]),
    # the rarer label is the one to catch, whatever its name or position
    (["fraud", "ok"], [[4, 6], [0, 90]],
     "94 of 100 test rows (94%) got the right label.",
     [f"Of 10 {q('fraud')} test rows, 4 were caught and 6 missed; 0 of 90 {q('ok')} rows were wrongly "
      f"flagged as {q('fraud')}."]),
    (["a", "b", "c"], [[5, 0, 0], [1, 3, 1], [0, 2, 8]],
     "16 of 20 test rows (80%) got the right label.",
     [f"5 of 5 {q('a')} rows were recognised.",
      f"3 of 5 {q('b')} rows were recognised; most often confused with {q('a')} (1).",
      f"8 of 10 {q('c')} rows were recognised; most often confused with {q('b')} (2)."]),
    (["x", "y", "z"], [[1, 0, 0], [0, 0, 2], [0, 0, 0]],
     "1 of 3 test rows (33%) got the right label.",
     [f"1 of 1 {q('x')} rows was recognised.", f"0 of 2 {q('y')} rows were recognised; most often confused "
      f"with {q('z')} (2).", f"{q('z')} had no test row."]),
]


@pytest.mark.parametrize("labels,matrix,overall,lines", CASES)
def test_sentences_say_what_the_confusion_matrix_says(labels, matrix, overall, lines):
    s = summarize(metrics(labels, matrix))
    assert s.overall == overall
    assert s.lines == lines


def test_the_weakest_labels_come_with_their_errors_and_what_would_help():
    errors = [{"text": "t1", "true": "b", "predicted": "a"}, {"text": "t2", "true": "c", "predicted": "b"},
              {"text": "t3", "true": "c", "predicted": "b"}]
    s = summarize(metrics(["a", "b", "c"], [[5, 0, 0], [1, 3, 1], [0, 2, 8]], {"a": 40, "b": 8, "c": 11}, errors))
    assert [w.label for w in s.weakest] == ["b", "c"]      # F1 0.60, 0.84 (then a, 0.91: at most labels - 1)
    assert s.weakest[0].recall == pytest.approx(0.6) and s.weakest[0].f1 == pytest.approx(0.6)
    assert [e["text"] for e in s.weakest[1].examples] == ["t2", "t3"]
    assert s.needs == (f"More examples of {q('b')} and {q('c')} would help most: they have 8 and 11 training "
                       "rows against 20 on average per label.")
    assert s.thin and "20 rows" in s.thin                             # under 30 test rows


def test_weak_labels_with_plenty_of_rows_are_not_told_to_get_more():
    s = summarize(metrics(["a", "b"], [[40, 10], [10, 40]], {"a": 300, "b": 300}))
    assert "not short of examples" in s.needs and s.thin is None


def test_of_two_labels_only_the_weaker_is_the_weakest():
    s = summarize(metrics(["ham", "spam"], [[39, 0], [3, 5]], {"ham": 137, "spam": 28}))
    assert [w.label for w in s.weakest] == ["spam"]
    assert s.needs == (f"More examples of {q('spam')} would help most: it has 28 training rows against 82 on "
                       "average per label.")


def test_a_perfect_run_has_no_weakest_label_and_nothing_without_a_matrix():
    s = summarize(metrics(["a", "b"], [[30, 0], [0, 30]], {"a": 100, "b": 100}))
    assert s.weakest == [] and s.needs is None and s.overall.startswith("60 of 60")
    assert summarize({"token_f1": 0.5}) is None
    assert summarize(metrics(["a", "b"], [[0, 0], [0, 0]])) is None


def test_error_examples_are_capped_and_truncated():
    texts = [f"text {i} " + "word " * 100 for i in range(20)]
    out = error_examples(texts, [0] * 10 + [1] * 10, [1] * 20, ["a", "b"], per_label=3, limit=30)
    assert [e["true"] for e in out] == ["a", "a", "a"]                # the b rows were right
    assert all(len(e["text"]) <= 160 and e["predicted"] == "b" for e in out)


# -- minimums ------------------------------------------------------------------------------------

def dataset(counts: dict[str, int]) -> TextDataset:
    rows = [Example(f"text {lab} {i}", lab, i + 2) for lab, n in counts.items() for i in range(n)]
    return TextDataset(rows, "text", "label")


@pytest.mark.parametrize("counts", [{"a": 2, "b": 1}, {"a": 100, "b": 7, "c": 3}, {"a": 5, "b": 5},
                                    {f"l{i}": 3 + i % 4 for i in range(12)}])
def test_split_counts_are_the_splits_split_dataset_makes(counts):
    s = split_dataset(dataset(counts))
    planned = split_counts(counts)
    for lab in counts:
        assert planned[lab] == (s.train.labels.count(lab), s.validation.labels.count(lab), s.test.labels.count(lab))
    assert limit_counts(counts, 9) == {lab: stratified_limit(dataset(counts), 9).labels.count(lab) for lab in counts}


def test_three_rows_are_refused_with_the_minimum_named():
    issues = planned_issues({"ham": 2, "spam": 1})
    errors = [i for i in issues if i.severity == "error"]
    assert errors and all(i.code == TOO_LITTLE for i in errors)
    text = " ".join(f"{i.message} {i.fix}" for i in errors)
    assert f"at least {MINIMUMS.test_rows} are needed" in text and f"at least {MINIMUMS.file_rows()} rows" in text
    assert f"at least {MINIMUMS.train_per_label} training rows" in text


def test_a_row_limit_is_named_and_a_thin_split_only_warned():
    assert "row limit of 3" in planned_issues({"ham": 900, "spam": 100}, limit=3)[0].message
    thin = planned_issues({"ham": 80, "spam": 40})             # 24 test rows
    assert [i.code for i in thin] == [THIN]
    assert planned_issues({"ham": 900, "spam": 100}) == []
    # a separate test file: its rows are the test, the file's rows all train (10 a label is enough)
    assert planned_issues({"a": 10, "b": 10}, test_rows=500) == []
    assert planned_issues({"a": 10, "b": 10}, test_rows=4)[0].code == TOO_LITTLE


def test_the_engine_check_reads_the_real_splits():
    assert [i.code for i in splits_issues(split_dataset(dataset({"a": 300, "b": 200})))] == []
    codes = [i.code for i in splits_issues(split_dataset(dataset({"a": 300, "b": 2})))]
    assert codes == [TOO_LITTLE]                                  # "b": no test row


def test_the_engine_refuses_before_training(tmp_path):
    from tunelab.data import DataError
    from tunelab.engine import DataSpec, prepare_data
    from tunelab.models import resolve_model

    f = tmp_path / "three.csv"
    f.write_text("text,label\nwin a prize now,spam\nsee you at lunch,ham\nmeeting moved to 3,ham\nfree cash,spam\n")
    with pytest.raises(DataError) as exc:
        prepare_data(DataSpec(f), resolve_model("minilm"))
    assert {i.code for i in exc.value.issues} == {TOO_LITTLE}
    assert "at least 10 are needed" in str(exc.value)


# -- jargon ----------------------------------------------------------------------------------------

def test_every_strategy_and_word_of_jargon_explains_itself():
    from tunelab.strategies import available
    from tunelab.web.glossary import explain

    for name in available():                       # from the strategy's own declaration
        assert explain(name), name
    for word in ("macro-F1", "trainable parameters", "latency", "MFU", "tokens/s", "accuracy"):
        assert explain(word), word
    assert explain("no such word") == "" and explain(None) == ""
