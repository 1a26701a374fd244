"""`tunelab datasets inspect` for an image archive or folder: the report (errors and warnings with
the members' paths) and the stats (images per class, sizes, aspect ratios, colour modes).
`train` and `compare` need nothing here: the engine recognises image data by its content."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .exits import EXIT_DATA, EXIT_OK


def is_images(path: Path) -> bool:
    from ..data.images import is_image_source

    try:
        return is_image_source(Path(path))
    except OSError:
        return False


def cmd_inspect_images(args) -> int:
    from ..data.images import IMAGE_KIND, read_image_source

    with tempfile.TemporaryDirectory(prefix="tunelab-inspect-") as work:
        train, test, report = read_image_source(Path(args.file), Path(work), test_path=args.test)
        stats = _stats(train, test)
    if args.json:
        print(json.dumps({"kind": IMAGE_KIND, "format": "images", **report.to_dict(), "images": stats},
                         indent=2, default=str))
    else:
        print(f"{args.file}: images, {stats.get('images', len(train) if train is not None else 0)} training images"
              + (f", {len(test)} test images" if test is not None else ""))
        print_image_stats(stats)
        print(report.render())
    return EXIT_OK if report.ok else EXIT_DATA


def _stats(train, test) -> dict:
    if train is None:
        return {}
    try:
        from ..data.images import image_stats
    except ImportError:
        from ..data.image_stats import image_stats
    return image_stats(train, test)


def print_image_stats(stats: dict) -> None:
    """The stats in a few lines: a table of classes, then the histograms' buckets."""
    train = stats.get("train", stats)
    counts = train.get("per_class") or train.get("label_counts") or {}
    if counts:
        print(f"classes: {len(counts)}")
        for label, count in list(counts.items())[:30]:
            print(f"  {label:<30} {count}")
    for key, title in (("sizes", "sizes (longer side)"), ("size_histogram", "sizes (longer side)"), ("aspect_histogram", "aspect ratios"),
                       ("aspects", "aspect ratios"), ("modes", "colour modes"), ("mode_counts", "colour modes")):
        value = train.get(key)
        if isinstance(value, dict) and "labels" in value and "counts" in value:     # a histogram
            print(f"{title}: " + ", ".join(f"{label} px: {n}" if key.startswith("size") else f"{label}: {n}"
                                          for label, n in zip(value["labels"], value["counts"]) if n))
        elif isinstance(value, dict) and value:
            print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in list(value.items())[:12]))
        elif isinstance(value, list) and value:
            print(f"{title}: " + ", ".join(_bucket(b) for b in value[:12]))


def _bucket(b) -> str:
    if isinstance(b, dict):
        label = b.get("label") or b.get("range") or b.get("bucket") or ""
        return f"{label} {b.get('count', '')}".strip()
    return str(b)


def predicts_images(predictor) -> bool:
    """An image classifier artifact (models/image_predictors.py's kinds) takes images, not texts."""
    return str(getattr(predictor, "kind", "")).startswith("image-")


def cmd_predict_images(predictor, args) -> int:
    """`tunelab predict MODEL a.jpg b.png`: each file read as one upload is (size- and bomb-checked)."""
    from ..data.images import read_image_bytes

    paths = [Path(p) for p in args.texts]
    if not paths:
        raise SystemExit("give image files to label")
    proba = predictor.predict_proba([read_image_bytes(p.read_bytes()) for p in paths])
    names = predictor.label_names
    rows = [{"image": str(p), "label": names[int(q.argmax())], "score": float(q.max()),
             "probabilities": {n: float(x) for n, x in zip(names, q)}} for p, q in zip(paths, proba)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['label']}\t{r['score']:.3f}\t{r['image']}")
    return EXIT_OK
