"""What an image dataset looks like: images per class, width / height / longer-side and aspect
histograms with fixed bins (comparable across datasets), colour modes and formats as stored, bytes.

The top level is the training set's summary (what the dataset page shows: `label_counts`,
`size_histogram`, `aspect_histogram`, `mode_counts`...); `train` and `test` hold the same per set,
with `rows` and `num_labels` as data.validation.Report.render() reads them.

A histogram is {"bins": [lower edges], "labels": [one per bin], "counts": [one per bin]}; the last
bin is open-ended ("≥4096").
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from statistics import median

# Pixels (width, height, longer side): powers of two, the sizes models and cameras use.
SIZE_BINS = [0, 32, 64, 128, 256, 512, 1024, 2048, 4096]
# Width / height: tall, portrait, near-square, landscape, wide.
ASPECT_BINS = [0.0, 0.5, 0.75, 0.9, 1.12, 1.34, 2.0]


def _labels(bins: list, fmt) -> list[str]:
    out = [f"<{fmt(bins[1])}"]
    out += [f"{fmt(lo)}–{fmt(hi)}" for lo, hi in zip(bins[1:-1], bins[2:])]
    return out + [f"≥{fmt(bins[-1])}"]


SIZE_LABELS = _labels(SIZE_BINS, lambda x: str(x))
ASPECT_LABELS = _labels(ASPECT_BINS, lambda x: f"{x:g}")


def histogram(values, bins: list, labels: list[str]) -> dict:
    counts = [0] * len(bins)
    for v in values:
        counts[max(bisect_right(bins, v) - 1, 0)] += 1
    return {"bins": list(bins), "labels": list(labels), "counts": counts}


def _summary(values: list[int]) -> dict:
    return {"min": min(values), "max": max(values), "median": median(values)} if values else {}


def split_stats(examples) -> dict:
    sized = [e for e in examples if e.width and e.height]
    widths, heights = [e.width for e in sized], [e.height for e in sized]
    label_counts = Counter(e.label for e in examples)
    return {
        "rows": len(examples),
        "images": len(examples),
        "num_labels": len(label_counts),
        "label_counts": dict(sorted(label_counts.items())),
        "size_histogram": histogram([max(w, h) for w, h in zip(widths, heights)], SIZE_BINS, SIZE_LABELS),
        "width_histogram": histogram(widths, SIZE_BINS, SIZE_LABELS),
        "height_histogram": histogram(heights, SIZE_BINS, SIZE_LABELS),
        "aspect_histogram": histogram([w / h for w, h in zip(widths, heights)], ASPECT_BINS, ASPECT_LABELS),
        "width": _summary(widths),
        "height": _summary(heights),
        "mode_counts": dict(Counter(e.mode for e in examples if e.mode).most_common()),
        "format_counts": dict(Counter(e.format for e in examples if e.format).most_common()),
        "total_bytes": sum(e.bytes for e in examples),
    }


def image_stats(train, test=None) -> dict:
    """Stats of an ImageDataset (and its test set): the training set's at the top level."""
    tr = split_stats(train.examples if train is not None else [])
    out = {**tr, "train": tr}
    if test is not None:
        out["test"] = split_stats(test.examples)
    return out
