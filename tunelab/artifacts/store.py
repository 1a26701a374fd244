"""An artifact folder: weights (safetensors) or adapter, tokenizer, label map, resolved config,
metrics.json, a model card, and manifest.json written last.

The manifest is the commit point: a folder without one (a crash mid-write) is never taken for a
finished model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..models import resolve_model
from ..models.predictors import PREDICTOR_KINDS
from ..training.checkpoints import atomic_write_text
from .model_card import render_model_card

MANIFEST = "manifest.json"


class ArtifactError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_artifact(out: Path, predictor, *, config: dict, metrics: dict, data_report: dict,
                   card: str | None = None) -> Path:
    """Writes into a temporary sibling folder, then moves it into place and writes the manifest.
    `card`: the model card's text (default: the classifier's card)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        saved = predictor.save(tmp)
        saved["precision"] = getattr(predictor, "precision", "no")
        (tmp / "labels.json").write_text(json.dumps(
            {"id2label": dict(enumerate(predictor.label_names))}, indent=2))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "README.md").write_text(card if card is not None else render_model_card(config, metrics, data_report))
        # Keep what an earlier run left in `out` (its checkpoints) but replace the model files.
        out.mkdir(exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)
        for item in tmp.iterdir():
            target = out / item.name
            if target.is_symlink():         # a link left in `out` is replaced, never followed
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = {str(p.relative_to(out)): _sha256(p) for name in saved["files"] + ["labels.json", "config.json",
             "metrics.json", "README.md"] for p in ([out / name] if (out / name).is_file()
                                                    else sorted((out / name).rglob("*"))) if p.is_file()}
    manifest = {**saved, "format": "tunelab-artifact/1", "tunelab_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(), "strategy": config.get("strategy"),
                "labels": predictor.label_names, "sha256": files}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    return out


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a finished tunelab model (no {MANIFEST}); "
                            "was its training interrupted? Run the same `tunelab train` again to resume.")
    return json.loads(path.read_text())


def load_artifact(directory: Path):
    directory = Path(directory)
    manifest = read_manifest(directory)
    cls = PREDICTOR_KINDS.get(manifest["kind"])
    if cls is None:
        raise ArtifactError(f"unknown artifact kind {manifest['kind']!r}")
    base = resolve_model(manifest["base_model"]).path if manifest.get("base_model") else None
    return cls.load(directory, manifest, manifest["labels"], base)
