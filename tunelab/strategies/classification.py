"""The text-classification task: a table of texts and labels in, a classifier out, ranked by
macro-F1, served as label probabilities."""

from __future__ import annotations

from pathlib import Path

from ..data import DataError, TextDataset, read_table, split_dataset, stratified_limit, validate
from ..evaluation import classification_metrics, timed_predict
from ..evaluation.intervals import (format_short, format_with_interval, macro_f1_accuracy_intervals,
                                   paired_difference_interval)
from ..models import token_counter
from .task import TASKS, DataSpec, PreparedData, Task

SERVED_PREDICTIONS = 10_000     # a run's cost counts serving this many predictions at its latency


def dedupe(ds: TextDataset) -> TextDataset:
    """One copy of each (text, label): repeats would otherwise land in train and test alike."""
    seen, keep = set(), []
    for i, e in enumerate(ds.examples):
        key = (" ".join(e.text.split()), e.label)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return ds.subset(keep) if len(keep) < len(ds) else ds


class TextClassification(Task):
    name = "text-classification"
    title = "text classification"
    data_kinds = ("labelled",)
    quality = "macro_f1"
    quality_label = "macro-F1"
    material = 0.02
    serving = "classify"
    default_model = "minilm"

    def prepare(self, spec: DataSpec, model, max_length: int | None = None) -> PreparedData:
        train = read_table(spec.train_file, text_column=spec.text_column, label_column=spec.label_column)
        test = None
        if spec.test_file:
            test = read_table(spec.test_file, text_column=spec.text_column or train.text_column,
                              label_column=spec.label_column or train.label_column)
        report = validate(train, test, max_length=model.max_length, count_tokens=token_counter(model))
        if not report.ok:
            raise DataError(report.errors)
        if test is not None:
            test = test.subset([i for i, e in enumerate(test.examples) if e.label in set(train.label_names)])
        source = dedupe(train) if test is None else train
        if spec.limit and spec.limit < len(source):
            source = stratified_limit(source, spec.limit, seed=spec.seed)
        return PreparedData(split_dataset(source, seed=spec.seed, test=test), report.to_dict(), spec, self)

    def data_config(self, data: PreparedData) -> dict:
        s = data.splits
        return {"train_file": Path(data.spec.train_file).name, "train_sha256": s.train.sha256,
                "test_file": Path(data.spec.test_file).name if data.spec.test_file else None,
                "train_rows": len(s.train), "validation_rows": len(s.validation), "test_rows": len(s.test),
                "test_origin": s.test_origin, "text_column": s.train.text_column,
                "label_column": s.train.label_column}

    def evaluate(self, predictor, ctx, progress) -> tuple[dict, list[dict]]:
        test = ctx.splits.test
        proba, _ = timed_predict(predictor, test.texts)
        # Latency as a served request sees it: no feature cache, a sample of the test texts.
        cache = getattr(predictor, "cache", None)
        if cache is not None:
            predictor.cache = None
        _, speed = timed_predict(predictor, test.texts[:256])
        if cache is not None:
            predictor.cache = cache
        names = predictor.label_names
        predicted = [names[i] for i in proba.argmax(axis=1)] if len(test) else []
        pred_ids = proba.argmax(axis=1) if len(test) else []
        # In memory only: a comparison tells two strategies apart on the same rows (paired bootstrap).
        ctx.notes["_paired"] = {"true": true_ids(test.labels, names), "pred": list(map(int, pred_ids)),
                                "labels": len(names)}
        return {**classification_metrics(test.labels, predicted, names), **speed, "test_rows": len(test),
                **label_intervals(test.labels, pred_ids, names)}, []

    def difference(self, a: dict, b: dict) -> dict | None:
        pa, pb = a.get("_paired"), b.get("_paired")
        if not pa or not pb or pa["true"] != pb["true"]:
            return None
        return paired_difference_interval(pa["true"], pa["pred"], pb["pred"], pa["labels"])

    columns = (("macro_f1", "macro-F1", "{:.3f}"), ("accuracy", "accuracy", "{:.3f}"),
               ("train_seconds", "train s", "{:.1f}"), ("latency_ms", "latency ms", "{:.2f}"),
               ("trainable_params", "trainable", "{:,}"), ("relative_cost", "rel. cost", "{:.1f}"))

    def headline(self, strategy: str, metrics: dict) -> str:
        m = metrics
        brackets = " (95% intervals in brackets)" if m.get("macro_f1_interval") else ""
        return (f"{strategy}: accuracy {format_short(m['accuracy'], m.get('accuracy_interval'))}, macro-F1 "
                f"{format_with_interval(m['macro_f1'], m.get('macro_f1_interval'))} on {m['test_rows']} test rows"
                f"{brackets}; trained in {m['train_seconds']:.1f}s")

    def summarize(self, strategy: str, metrics: dict) -> dict:
        m = metrics
        return {"strategy": strategy, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
                "train_seconds": m["train_seconds"], "latency_ms": m["latency_ms_per_example"],
                "trainable_params": m["trainable_params"], "peak_rss_mb": m["peak_rss_mb"],
                "cost_seconds": m["train_seconds"] + m["latency_ms_per_example"] / 1000 * SERVED_PREDICTIONS,
                "quality": m["macro_f1"], "macro_f1_interval": m.get("macro_f1_interval"),
                "accuracy_interval": m.get("accuracy_interval"), "quality_interval": m.get("macro_f1_interval"),
                "test_rows": m.get("test_rows")}


def label_intervals(true_labels: list[str], predicted_ids, names: list[str]) -> dict:
    """The 95% bootstrap intervals of macro-F1 and accuracy over the test rows (a test label the
    model does not know counts as a miss, outside the average, as for sklearn's labels=names)."""
    return macro_f1_accuracy_intervals(true_ids(true_labels, names), predicted_ids, len(names))


def true_ids(true_labels: list[str], names: list[str]) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    return [index.get(label, len(names)) for label in true_labels]


TEXT_CLASSIFICATION = TASKS[TextClassification.name]
