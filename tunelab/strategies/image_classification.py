"""The image-classification task: an archive (or folder) of labelled images in, a classifier out,
ranked by macro-F1 like text classification and served as label probabilities.

It is the text task with other inputs: the split, the metrics, their intervals, the paired
differences a comparison draws and the table's columns are the text task's own (inherited), so a
comparison of image strategies reads and is recommended exactly like one of text strategies. What
differs is reading (data.images: guarded extraction, every image decoded once), where the
extracted images live while a run needs them, and what a prediction is fed (decoded images).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import ClassVar

from ..data import DataError, split_dataset, stratified_limit
from ..evaluation import classification_metrics, timed_predict
from ..evaluation.intervals import format_short, format_with_interval
from .classification import TextClassification, label_intervals, true_ids
from .task import TASKS, DataSpec, PreparedData

LATENCY_SAMPLE = 24
"""Images whose one-at-a-time prediction times the latency (their median): a served request
decodes and predicts one image at a time; more calls would add seconds to every run (~15 ms each
for EfficientNet-Lite0 on 2 cores) without moving a median."""


def work_root() -> Path:
    """Where archives are extracted while a run uses them: under TUNELAB_HOME, the one folder a
    sandboxed job may write besides its own (its inputs are read-only)."""
    home = Path(os.environ.get("TUNELAB_HOME", Path.home() / ".tunelab"))
    root = home / "work" / "images"
    root.mkdir(parents=True, exist_ok=True)
    return root


def dedupe_images(ds):
    """One copy of each (content, label): an image twice in the archive would otherwise land in
    train and test alike and flatter the score (the report warns about it as well)."""
    seen, keep = set(), []
    for i, e in enumerate(ds.examples):
        if (e.sha256, e.label) not in seen:
            seen.add((e.sha256, e.label))
            keep.append(i)
    return ds.subset(keep) if len(keep) < len(ds) else ds


def open_images(ds, indices=None) -> list:
    """Decoded RGB images of a dataset (all of them, or those at `indices`)."""
    return [ds.open(i) for i in (range(len(ds)) if indices is None else indices)]


class ImageClassification(TextClassification):
    name = "image-classification"
    title = "image classification"
    data_kinds = ("images",)
    quality = "macro_f1"
    quality_label = "macro-F1"
    material = 0.02
    serving = "classify"        # every classifier view applies (confusion matrix, batch predictions)
    inputs: ClassVar[str] = "image"
    default_model = "efficientnet-lite0"
    model_kind = "image-encoder"

    # The text task's columns, with images/s where text shows tokens/s.
    columns = (*TextClassification.columns, ("images_per_s", "images/s", "{:,.0f}"))

    def row(self, strategy: str, metrics: dict) -> dict:
        eff = metrics.get("efficiency") or {}
        return {**self.summarize(strategy, metrics), "images_per_s": eff.get("samples_per_s"), "tokens_per_s": None,
                "mfu": eff.get("mfu"), "usd_per_million_tokens": None}

    def kind_of(self, path: Path) -> str | None:
        from ..data.images import IMAGE_KIND, is_image_source

        try:
            return IMAGE_KIND if is_image_source(Path(path)) else None
        except OSError:
            return None

    def prepare(self, spec: DataSpec, model, max_length: int | None = None) -> PreparedData:
        """Extract and decode (errors: DataError with the members' paths), then the text task's
        stratified split. The archive's test folder, or --test, is the test set as given."""
        from ..data.images import read_image_source

        work = Path(tempfile.mkdtemp(prefix="run-", dir=work_root()))
        try:
            train, test, report = read_image_source(Path(spec.train_file), work,
                                                    test_path=Path(spec.test_file) if spec.test_file else None)
            if not report.ok:
                raise DataError(report.errors)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if test is not None:
            known = set(train.label_names)
            test = test.subset([i for i, e in enumerate(test.examples) if e.label in known])
        source = dedupe_images(train) if test is None else train
        if spec.limit and spec.limit < len(source):
            source = stratified_limit(source, spec.limit, seed=spec.seed)
        splits = split_dataset(source, seed=spec.seed, test=test)
        # The extracted images live as long as the splits that read them (the run, its evaluation),
        # and go at exit at the latest: nothing is left behind under TUNELAB_HOME.
        weakref.finalize(splits, shutil.rmtree, str(work), True)
        data = report.to_dict()
        data.setdefault("kind", "images")
        return PreparedData(splits, data, spec, self)

    def data_config(self, data: PreparedData) -> dict:
        s = data.splits
        return {"train_file": Path(data.spec.train_file).name, "train_sha256": s.train.sha256,
                "test_file": Path(data.spec.test_file).name if data.spec.test_file else None,
                "train_rows": len(s.train), "validation_rows": len(s.validation), "test_rows": len(s.test),
                "test_origin": s.test_origin, "inputs": "image"}

    def evaluate(self, predictor, ctx, progress) -> tuple[dict, list[dict]]:
        test = ctx.splits.test
        # The dataset itself: a frozen-feature predictor finds its features in the cache by content.
        proba, _ = timed_predict(predictor, test)
        # Latency as a served request sees it: one image at a time, decoded, no feature cache.
        cache = getattr(predictor, "cache", None)
        if cache is not None:
            predictor.cache = None
        try:
            speed = _latency(predictor, test)
        finally:
            if cache is not None:
                predictor.cache = cache
        names = predictor.label_names
        pred_ids = proba.argmax(axis=1) if len(test) else []
        predicted = [names[i] for i in pred_ids]
        ctx.notes["_paired"] = {"true": true_ids(test.labels, names), "pred": list(map(int, pred_ids)),
                                "labels": len(names)}
        return {**classification_metrics(test.labels, predicted, names), **speed, "test_rows": len(test),
                **label_intervals(test.labels, pred_ids, names)}, []

    def card(self, config: dict, metrics: dict, report: dict, samples: list[dict]) -> str | None:
        """The classifier's card, in images: no token truncation, images instead of rows and texts."""
        from ..artifacts.model_card import render_model_card

        lines = [line for line in render_model_card({**config, "max_length": None}, metrics, report).splitlines()
                 if "tokens are truncated" not in line]
        words = {"training rows": "training images", "validation rows": "validation images",
                 "test rows": "test images", "texts unlike the training data": "images unlike the training images"}
        text = "\n".join(lines) + "\n"
        for old, new in words.items():
            text = text.replace(old, new)
        size = (config.get("notes") or {}).get("image_size") or (config.get("params") or {}).get("image_size")
        if size:
            text = text.replace("## Limits\n", f"## Limits\n\n- Images are resized and centre-cropped to {size}x{size} px.", 1)
        return text

    def headline(self, strategy: str, metrics: dict) -> str:
        m = metrics
        brackets = " (95% intervals in brackets)" if m.get("macro_f1_interval") else ""
        return (f"{strategy}: accuracy {format_short(m['accuracy'], m.get('accuracy_interval'))}, macro-F1 "
                f"{format_with_interval(m['macro_f1'], m.get('macro_f1_interval'))} on {m['test_rows']} test "
                f"images{brackets}; trained in {m['train_seconds']:.1f}s")


def _latency(predictor, test) -> dict:
    """The median time of one image's prediction (decoding included) over a sample, after a warm-up:
    on a shared machine the mean of a few dozen calls is the neighbours' load as much as the
    model's, and a comparison's cost counts 10,000 of them."""
    import statistics
    import time

    n = min(LATENCY_SAMPLE, len(test))
    for i in range(min(2, n)):
        predictor.predict_proba([test.open(i)])
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        predictor.predict_proba([test.open(i)])
        times.append(time.perf_counter() - t0)
    per = statistics.median(times) if times else 0.0
    return {"predict_seconds": sum(times), "latency_ms_per_example": 1000 * per,
            "throughput_per_s": 1 / per if per > 0 else 0.0}


IMAGE_CLASSIFICATION = TASKS[ImageClassification.name]
