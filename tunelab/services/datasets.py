"""Importing an uploaded file as a tenant's dataset: parse (nothing kept if it cannot be read),
store content-addressed, validate and compute stats (kept with the row, so the UI can show
the report and a job can refuse a dataset with errors)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy.orm import Session

from ..data import DataLimits, validate
from ..db.models import Dataset
from ..db.scoped import TenantScope
from .storage import dataset_store


@lru_cache(maxsize=4)
def _counter(model_name: str):
    from ..models import resolve_model, token_counter

    spec = resolve_model(model_name)
    return spec.max_length, token_counter(spec)


def import_dataset(session: Session, tenant_id: str, home: Path, upload: Path, filename: str, *,
                   purpose: str = "fine-tune", text_column: str | None = None, label_column: str | None = None,
                   limits: DataLimits | None = None, model: str = "minilm") -> Dataset:
    """DataError when the file cannot be read (nothing stored, no row)."""
    named = upload.with_name(Path(filename).name or "upload")
    if named != upload:
        upload.rename(named)       # the reader uses the suffix as a format hint
    try:
        stored = dataset_store(home, tenant_id).import_file(named, text_column=text_column,
                                                            label_column=label_column, limits=limits)
    finally:
        named.unlink(missing_ok=True)
    ds = stored.load()
    max_length, counter = _counter(model)
    report = validate(ds, max_length=max_length, count_tokens=counter)
    row = Dataset(filename=Path(filename).name, purpose=purpose, bytes=len(stored.read()),
                  sha256=stored.sha256, status="processed" if report.ok else "error",
                  text_column=ds.text_column, label_column=ds.label_column, rows=len(ds),
                  report={k: v for k, v in report.to_dict().items() if k != "stats"}
                  | {"format": stored.meta.get("format"), "encoding": stored.meta.get("encoding"),
                     "columns": stored.meta.get("columns")},
                  stats=report.stats.get("train", {}))
    return TenantScope(session, tenant_id).add(row)


def stored_dataset(home: Path, row: Dataset):
    return dataset_store(home, row.tenant_id).get(row.sha256) if row.sha256 else None


def preview(home: Path, row: Dataset, limit: int = 20) -> list[dict]:
    stored = stored_dataset(home, row)
    if stored is None:
        return []
    ds = stored.load()
    return [{"line": e.line, "text": e.text, "label": e.label} for e in ds.examples[:limit]]
