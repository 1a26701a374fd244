"""Where a tenant's files live, encrypted at rest with its own data key:

  TUNELAB_HOME/tenants/<tenant>/dek.json        its data key, wrapped by the master key
  TUNELAB_HOME/tenants/<tenant>/datasets/       its uploads (content-addressed, encrypted)
  TUNELAB_HOME/tenants/<tenant>/runtime/        its jobs' caches (mounted into its jobs)
  TUNELAB_HOME/jobs/<tenant>/<job>/             a job's folder; results sealed as *.tar.enc

Nothing is shared between tenants, not even identical uploads (deduplication across tenants
would tell one tenant what another uploaded).
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from functools import lru_cache
from pathlib import Path

from ..data import DatasetStore
from .archives import safe_extract
from .crypto import Cipher, TenantKeys

SEALED = ".tar.enc"


@lru_cache(maxsize=8)
def tenant_keys(home: Path) -> TenantKeys:
    return TenantKeys(home)


def cipher(home: Path, tenant_id: str) -> Cipher:
    return tenant_keys(Path(home)).cipher(tenant_id)


def tenant_root(home: Path, tenant_id: str) -> Path:
    return Path(home) / "tenants" / tenant_id


def dataset_store(home: Path, tenant_id: str) -> DatasetStore:
    return DatasetStore(tenant_root(home, tenant_id) / "datasets", codec=cipher(home, tenant_id))


def seal_folder(home: Path, tenant_id: str, folder: Path) -> Path:
    """Replace `folder` by one encrypted tar of it (`<folder>.tar.enc`)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(folder, arcname=".")
    sealed = folder.with_name(folder.name + SEALED)
    tmp = sealed.with_suffix(".tmp")
    tmp.write_bytes(cipher(home, tenant_id).encrypt(buf.getvalue()))
    tmp.replace(sealed)
    shutil.rmtree(folder)
    return sealed


def open_sealed(home: Path, tenant_id: str, sealed: Path, dest: Path) -> Path:
    """Decrypt and extract a sealed folder into the new folder `dest` (a temp dir of the caller)."""
    data = cipher(home, tenant_id).decrypt(Path(sealed).read_bytes())
    with tempfile.NamedTemporaryFile(suffix=".tar") as tmp:
        tmp.write(data)
        tmp.flush()
        return safe_extract(tmp.name, dest)


def read_sealed_file(home: Path, tenant_id: str, sealed: Path, name: str) -> bytes:
    data = cipher(home, tenant_id).decrypt(Path(sealed).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        member = tf.extractfile(f"./{name}")
        if member is None:
            raise FileNotFoundError(name)
        return member.read()


UPLOADED_PREFIX = "upload:"


def models_root(home: Path, tenant_id: str) -> Path:
    """A tenant's own uploaded base models (services.uploaded_models imports them)."""
    return Path(home) / "tenants" / tenant_id / "models"


def find_model(home: Path, tenant_id: str, model: str) -> Path | None:
    """The folder of a tenant's uploaded model `upload:<id>`, or None (never a path from outside)."""
    if not model.startswith(UPLOADED_PREFIX):
        return None
    ident = model[len(UPLOADED_PREFIX):]
    if not ident.isalnum():
        return None
    folder = models_root(home, tenant_id) / ident
    return folder if (folder / "tunelab-upload.json").is_file() else None
