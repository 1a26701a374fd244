"""Where a tenant's files live, encrypted at rest with its own data key:

  TUNELAB_HOME/tenants/<tenant>/dek.json        its data key, wrapped by the master key
  TUNELAB_HOME/tenants/<tenant>/datasets/       its uploads (content-addressed, encrypted)
  TUNELAB_HOME/tenants/<tenant>/runtime/        its jobs' caches (mounted into its jobs)
  TUNELAB_HOME/jobs/<tenant>/<job>/             a job's folder; results sealed as *.tar.enc

Nothing is shared between tenants, not even identical uploads (deduplication across tenants
would tell one tenant what another uploaded).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from functools import lru_cache
from pathlib import Path

from ..data import DatasetStore
from .archives import safe_extract
from .crypto import Cipher, TenantKeys
from .safe_fs import atomic_writer_at, opened_dir, tar_regular_tree

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


def seal_at(home: Path, tenant_id: str, parent_fd: int, name: str) -> tuple[str, list[str]]:
    """Replace the folder parent/name by one encrypted tar of it, `<name>.tar.enc` beside it,
    without following any link: only its regular files and folders go in (safe_fs). Returns the
    sealed file's name and what was left out, with why. Raises safe_fs.UnsafeEntry when
    parent/name is not a plain folder."""
    sealed = name + SEALED
    with atomic_writer_at(parent_fd, sealed) as f, cipher(home, tenant_id).encryptor(f) as enc:
        skipped = tar_regular_tree(parent_fd, name, enc)       # streamed: never the whole in memory
    shutil.rmtree(name, dir_fd=parent_fd)
    return sealed, skipped


def seal_folder(home: Path, tenant_id: str, folder: Path) -> Path:
    """Replace `folder` by one encrypted tar of it (`<folder>.tar.enc`); its parent is a path the
    caller controls."""
    folder = Path(folder)
    with opened_dir(folder.parent) as parent:
        sealed, _ = seal_at(home, tenant_id, parent, folder.name)
    return folder.with_name(sealed)


def open_sealed(home: Path, tenant_id: str, sealed: Path, dest: Path) -> Path:
    """Decrypt and extract a sealed folder into the new folder `dest` (a temp dir of the caller),
    a segment at a time."""
    key = cipher(home, tenant_id)
    with tempfile.NamedTemporaryFile(suffix=".tar") as tmp, open(sealed, "rb") as src:
        for chunk in key.decrypt_stream(src):
            tmp.write(chunk)
        tmp.flush()
        return safe_extract(tmp.name, dest)


def read_sealed_file(home: Path, tenant_id: str, sealed: Path, name: str) -> bytes:
    """One small file of a sealed folder, read through the tar as a stream (never the whole)."""
    with open(sealed, "rb") as src, tarfile.open(fileobj=cipher(home, tenant_id).reader(src), mode="r|") as tf:
        for member in tf:
            if member.name == f"./{name}" and member.isfile():
                return tf.extractfile(member).read()
    raise FileNotFoundError(name)


def decrypted_chunks(home: Path, tenant_id: str, sealed: Path):
    """A sealed file's plaintext, a segment at a time (for a download)."""
    with open(sealed, "rb") as src:
        yield from cipher(home, tenant_id).decrypt_stream(src)


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
