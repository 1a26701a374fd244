"""What the pages show of images: an image dataset's stats (images per class, size and aspect
histograms, colour modes) and its thumbnail grid, and the playground's copy of the image it was
given. Thumbnails come from the row's sealed stats (services/image_datasets.py), unsealed only
here, for the tenant's own page; nothing of the images is written to disk."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from ..services.image_datasets import row_thumbnails

PREVIEW_SIZE = 192


def image_preview(data: bytes) -> str | None:
    """A small PNG (data: URL) of an uploaded image, to show next to its prediction; None when it
    cannot be read (the prediction already said why)."""
    from ..data import DataError
    from ..data.images import read_image_bytes

    try:
        image = read_image_bytes(data)
    except (DataError, OSError, ValueError):
        return None
    image.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _bars(counts: dict, top: int = 40) -> list[dict]:
    items = list(counts.items())[:top]
    peak = max((c for _, c in items), default=1) or 1
    return [{"label": str(k), "count": int(c), "pct": round(100 * c / peak, 1)} for k, c in items]


def _histogram(h: dict | None) -> list[dict]:
    """{bins: [edges], counts: [...]} (or {labels, counts}) as columns for the template."""
    if not isinstance(h, dict):
        return []
    counts = list(h.get("counts") or [])
    peak = max(counts, default=1) or 1
    edges = list(h.get("bins") or h.get("edges") or [])
    labels = list(h.get("labels") or [])
    out = []
    for i, c in enumerate(counts):
        if labels and i < len(labels):
            span = str(labels[i])
        elif i + 1 < len(edges):
            span = f"{_num(edges[i])}–{_num(edges[i + 1])}"
        else:
            span = str(i)
        out.append({"span": span, "count": int(c), "pct": round(100 * c / peak, 1)})
    return out


def _num(x) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


def _first(stats: dict, *keys):
    for k in keys:
        if stats.get(k) is not None:
            return stats[k]
    return None


def dataset_context(home: Path, row) -> dict:
    """The image part of a dataset page."""
    stats = row.stats or {}
    sizes = _first(stats, "size_histogram", "sizes", "size") or {}
    aspects = _first(stats, "aspect_histogram", "aspects", "aspect") or {}
    modes = _first(stats, "mode_counts", "modes", "colour_modes", "color_modes") or {}
    thumbs = row_thumbnails(home, row)
    return {
        "image_bars": _bars(stats.get("label_counts") or {}),
        "size_hist": _histogram(sizes.get("histogram") if "histogram" in sizes else sizes),
        "size_summary": {k: v for k, v in sizes.items() if k in ("min", "max", "median", "mean", "p50")},
        "aspect_hist": _histogram(aspects.get("histogram") if "histogram" in aspects else aspects),
        "mode_bars": _bars(modes if isinstance(modes, dict) else {}),
        "thumbs": [{"label": label, "items": items} for label, items in thumbs.items()],
        "test_rows": (row.report or {}).get("test_rows"),
    }


MISCLASSIFIED = 12


def misclassified(home: Path, model, dataset) -> list[dict]:
    """A few of an image model's misclassified test images ({path, true, predicted, data_url}):
    the member paths its result keeps (sealed), read from the training archive (or the job's test
    archive) in memory. [] when the data is gone or the run kept none."""
    from ..db.models import Dataset, Job
    from ..security import sealed_fields
    from ..security.storage import cipher
    from ..services.image_datasets import member_thumbnails
    from sqlalchemy.orm import object_session

    metrics = sealed_fields.unseal(model.metrics or {}, cipher(home, model.tenant_id))
    examples = [e for e in (metrics.get("error_examples") or []) if isinstance(e, dict)][:MISCLASSIFIED]
    if not examples:
        return []
    rows = [dataset]
    session = object_session(model)
    job = session.get(Job, model.job_id) if session is not None and model.job_id else None
    test_id = (job.spec or {}).get("test_dataset_id") if job is not None else None
    if test_id:
        test = session.get(Dataset, test_id)
        rows.insert(0, test if test is not None and test.tenant_id == model.tenant_id else None)
    try:
        urls = member_thumbnails(home, [r for r in rows if r is not None], [e.get("text", "") for e in examples])
    except Exception:           # noqa: BLE001 - an unreadable archive: the page shows the paths alone
        urls = {}
    return [{"path": e.get("text", ""), "true": e.get("true"), "predicted": e.get("predicted"),
             "data_url": urls.get(e.get("text", ""))} for e in examples]
