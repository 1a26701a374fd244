"""Bring-your-own models through the service: an archive of a Hugging Face folder, extracted by the
guarded extractor, checked (safetensors with valid headers, no pickles, no code), kept in the
tenant's own folder, and usable as a base model as `upload:<id>`."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from ..security.archives import safe_extract
from ..security.weights import check_uploaded_model

from ..security.storage import UPLOADED_PREFIX as PREFIX, find_model, models_root  # noqa: F401


def import_model(home: Path, tenant_id: str, archive: Path, name: str) -> dict:
    """UnsafeArchive / UnsafeWeights when refused; nothing is kept then."""
    root = models_root(home, tenant_id)
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        extracted = safe_extract(archive, scratch / "x")
        entries = list(extracted.iterdir())
        folder = entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted
        info = check_uploaded_model(folder)
        model_id = secrets.token_hex(8)
        meta = {"id": PREFIX + model_id, "name": name, "created_at": int(time.time()), **info}
        (folder / "tunelab-upload.json").write_text(json.dumps(meta))
        folder.rename(root / model_id)
        return meta
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def list_models(home: Path, tenant_id: str) -> list[dict]:
    root = models_root(home, tenant_id)
    metas = [json.loads(p.read_text()) for p in root.glob("*/tunelab-upload.json")] if root.is_dir() else []
    return sorted(metas, key=lambda m: m["created_at"])


def delete_model(home: Path, tenant_id: str, model: str) -> bool:
    folder = find_model(home, tenant_id, model)
    if folder is None:
        return False
    shutil.rmtree(folder)
    return True
