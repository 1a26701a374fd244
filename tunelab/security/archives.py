"""The only way tunelab opens a user's zip or tar: every member checked before a byte is written
(no absolute path, no `..`, no link, no device), a cap on members, and the expanded size counted
as it is written — not as the archive claims — so a bomb stops at the limit. Extraction goes to
a staging folder that is renamed into place only when everything passed: a refused archive
leaves nothing behind."""

from __future__ import annotations

import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1024 * 1024


class UnsafeArchive(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 20_000
    max_total_bytes: int = 4 * 1024**3
    max_ratio: float = 200.0          # expanded / compressed, for the archive as a whole


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (p.parts and ":" in p.parts[0]):
        raise UnsafeArchive("absolute_path", f"archive member {name!r} has an absolute path")
    if any(part == ".." for part in p.parts):
        raise UnsafeArchive("path_traversal", f"archive member {name!r} climbs out of the folder with '..'")
    return p


class _Budget:
    def __init__(self, limits: ArchiveLimits, compressed: int):
        self.limits, self.written = limits, 0
        self.cap = min(limits.max_total_bytes, int(max(compressed, 1) * limits.max_ratio))

    def copy(self, src, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                self.written += len(chunk)
                if self.written > self.cap:
                    raise UnsafeArchive("archive_too_large", f"the archive expands past {self.cap:,} bytes "
                                        "(a limit, and the mark of a zip bomb)")
                out.write(chunk)


def _extract_zip(path: Path, staging: Path, limits: ArchiveLimits) -> int:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise UnsafeArchive("too_many_members", f"the archive has {len(infos):,} members (limit {limits.max_members:,})")
        budget = _Budget(limits, path.stat().st_size)
        for info in infos:
            rel = _safe_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchive("link", f"archive member {info.filename!r} is a symbolic link")
            if info.is_dir():
                (staging / rel).mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as src:
                budget.copy(src, staging / rel)
        return len(infos)


def _extract_tar(path: Path, staging: Path, limits: ArchiveLimits) -> int:
    with tarfile.open(path, "r:*") as tf:
        budget, count = _Budget(limits, path.stat().st_size), 0
        for member in tf:                 # streamed: a tar's member list is not read up front
            count += 1
            if count > limits.max_members:
                raise UnsafeArchive("too_many_members", f"the archive has more than {limits.max_members:,} members")
            rel = _safe_name(member.name)
            if member.issym() or member.islnk():
                raise UnsafeArchive("link", f"archive member {member.name!r} is a link to {member.linkname!r}")
            if member.isdir():
                (staging / rel).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                src = tf.extractfile(member)
                budget.copy(src, staging / rel)
            else:
                raise UnsafeArchive("special_file", f"archive member {member.name!r} is a device or pipe")
        return count


def safe_extract(archive: str | Path, dest: str | Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract `archive` (zip or tar, any compression) into the new folder `dest`."""
    archive, dest, limits = Path(archive), Path(dest), limits or ArchiveLimits()
    if dest.exists():
        raise FileExistsError(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, staging, limits)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, staging, limits)
        else:
            raise UnsafeArchive("not_an_archive", f"{archive.name} is neither a zip nor a tar archive")
        staging.rename(dest)
        return dest
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise UnsafeArchive("corrupt_archive", f"{archive.name} is damaged: {exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
