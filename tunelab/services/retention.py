"""Files go with the rows that own them: deleting a dataset deletes its stored (encrypted) blob,
deleting a tuned model deletes its sealed file, once no other row of the tenant still points at
the same one (a dataset uploaded twice shares its content-addressed blob; a compare job's models
may share a file). Until then the bytes count in the tenant's storage quota (billing.quotas)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.models import Dataset, TunedModel
from ..security.storage import tenant_root


def drop_dataset_blob(session: Session, home: Path, tenant_id: str, sha256: str | None) -> bool:
    """Call after the dataset's row was deleted (and flushed). True when the blob was removed."""
    if not sha256 or not sha256.isalnum():
        return False
    session.flush()
    still = session.scalar(select(func.count()).select_from(Dataset)
                           .where(Dataset.tenant_id == tenant_id, Dataset.sha256 == sha256))
    folder = tenant_root(home, tenant_id) / "datasets" / "objects" / sha256[:2] / sha256
    if still or not folder.is_dir() or folder.is_symlink():
        return False
    shutil.rmtree(folder)
    return True


def drop_tuned_artifact(session: Session, home: Path, tenant_id: str, artifact_path: str | None) -> bool:
    """Call after the tuned model's row was deleted (and flushed). Only a file inside the
    tenant's own jobs folder is ever removed."""
    if not artifact_path:
        return False
    session.flush()
    still = session.scalar(select(func.count()).select_from(TunedModel)
                           .where(TunedModel.tenant_id == tenant_id, TunedModel.artifact_path == artifact_path))
    path = Path(artifact_path)
    inside = path.resolve().is_relative_to((Path(home) / "jobs" / tenant_id).resolve())
    if still or not inside or path.is_symlink() or not path.exists():
        return False
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return True
