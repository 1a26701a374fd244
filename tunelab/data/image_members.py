"""The members of an image source — a zip, a tar (any compression) or a plain folder — listed
and read without trusting it. Every member name is checked before anything is read (no absolute
path, no `..`, no link, no device, no absurd nesting) and every unsafe one is *reported*, not just
the first: the per-member report needs them all. Bytes are read into memory against a budget (the
expanded size counted as it is read, not as the archive claims), so a zip bomb stops at the limit.

The rules are those of security/archives.py (which `data` cannot import: it sits a layer above);
tests/test_image_data.py checks that both refuse the same members.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# Deeper than any real dataset; a name nested further is a crafted one.
MAX_DEPTH = 32
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
# Expanded / compressed for the archive as a whole, as security.archives.ArchiveLimits has it.
MAX_RATIO = 200.0


class SourceError(ValueError):
    """The whole source is unusable (not an archive, damaged, over a limit)."""

    def __init__(self, code: str, message: str, fix: str):
        super().__init__(message)
        self.code, self.fix = code, fix


@dataclass(frozen=True)
class Member:
    path: str           # normalised POSIX path ("train/cat/1.png"); the raw name when unsafe
    size: int           # bytes, as listed (a zip may lie: reading counts the real bytes)
    problem: str = ""   # why the member is unsafe ("" when it is safe)


@dataclass
class Listing:
    kind: str                               # "zip" | "tar" | "folder"
    members: list[Member] = field(default_factory=list)
    too_many: bool = False                  # listing stopped at the member cap

    @property
    def safe(self) -> list[Member]:
        return [m for m in self.members if not m.problem]

    @property
    def unsafe(self) -> list[Member]:
        return [m for m in self.members if m.problem]


def source_kind(path: Path) -> str | None:
    """ "folder", "zip", "tar" or None, from the content (a name says nothing)."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if not path.is_file():
        return None
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, EOFError, tarfile.TarError):
        return None


def normalise(name: str) -> tuple[str, str]:
    """(POSIX path, problem) for a member name; the problem is "" for a safe name."""
    raw = name.replace("\\", "/")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if raw.startswith("/") or (parts and ":" in parts[0]):
        return name, "has an absolute path"
    if ".." in parts:
        return name, "climbs out of the folder with '..'"
    if len(parts) > MAX_DEPTH:
        return name, f"is nested more than {MAX_DEPTH} folders deep"
    return "/".join(parts), ""


def is_junk(path: str) -> bool:
    """Hidden files and folders, macOS resource forks, Windows thumbnail caches."""
    parts = path.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1].lower() in JUNK_NAMES


def list_members(path: Path, max_members: int) -> Listing:
    """Every regular file of the source (safe or not), stopping past `max_members` entries."""
    kind = source_kind(path)
    if kind is None:
        raise SourceError("not_an_archive", f"{Path(path).name} is neither a zip, a tar nor a folder of images",
                          "Send a zip (or tar) of one folder per class, e.g. cat/1.png, dog/2.png.")
    listing = Listing(kind)
    try:
        entries = {"zip": _zip_entries, "tar": _tar_entries, "folder": _folder_entries}[kind](Path(path))
        seen: set[str] = set()
        for count, (name, size, problem) in enumerate(entries, 1):
            if count > max_members:
                listing.too_many = True
                break
            norm, name_problem = normalise(name)
            member = Member(norm, size, problem or name_problem)
            if member.path not in seen:     # a repeated name: the first is the one read
                seen.add(member.path)
                listing.members.append(member)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise _damaged(path, exc) from None
    return listing


def _damaged(path: Path, exc: Exception) -> SourceError:
    return SourceError("corrupt_archive", f"{Path(path).name} is damaged and cannot be read ({exc})",
                       "Make the archive again from the original folder.")


def _zip_entries(path: Path) -> Iterator[tuple[str, int, str]]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                continue
            kind = stat.S_IFMT(mode)
            if stat.S_ISLNK(mode):
                yield info.filename, info.file_size, "is a symbolic link"
            elif kind and not stat.S_ISREG(mode):
                yield info.filename, info.file_size, "is a device or pipe"
            else:
                yield info.filename, info.file_size, ""


def _tar_entries(path: Path) -> Iterator[tuple[str, int, str]]:
    with tarfile.open(path, "r:*") as tf:
        for m in tf:                        # streamed: stops early on a member flood
            if m.isdir():
                continue
            if m.issym() or m.islnk():
                yield m.name, 0, f"is a link to {m.linkname!r}"
            elif not m.isfile():
                yield m.name, 0, "is a device or pipe"
            else:
                yield m.name, m.size, ""


def _folder_entries(root: Path) -> Iterator[tuple[str, int, str]]:
    """Walked with an explicit stack (no recursion on the user's depth), links not followed."""
    stack = [(root, "", 0)]
    while stack:
        folder, prefix, depth = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                yield rel, 0, "is a symbolic link"
            elif entry.is_dir(follow_symlinks=False):
                if depth + 1 >= MAX_DEPTH:
                    yield rel + "/", 0, f"is nested more than {MAX_DEPTH} folders deep"
                else:
                    stack.append((Path(entry.path), rel + "/", depth + 1))
            elif entry.is_file(follow_symlinks=False):
                yield rel, entry.stat(follow_symlinks=False).st_size, ""
            else:
                yield rel, 0, "is a device or pipe"


class Budget:
    """Bytes read so far against the cap: the limit, and for an archive no more than MAX_RATIO
    times its size (the mark of a bomb, as security.archives counts it)."""

    def __init__(self, max_bytes: int, compressed: int | None = None):
        self.read = 0
        self.cap = max_bytes if compressed is None else min(max_bytes, int(max(compressed, 1) * MAX_RATIO))

    def take(self, n: int) -> None:
        self.read += n
        if self.read > self.cap:
            raise SourceError("archive_too_large", f"the images expand past {self.cap:,} bytes "
                              "(a limit, and the mark of a zip bomb)",
                              "Split the data into smaller archives, or resize the images before zipping them.")


def read_members(path: Path, kind: str, wanted: set[str], budget: Budget,
                 max_member_bytes: int) -> Iterator[tuple[str, bytes | None]]:
    """(path, bytes) for each wanted safe member in the source's order; bytes is None for a
    member over `max_member_bytes` (only that much + 1 is read to find out)."""
    reader = {"zip": _read_zip, "tar": _read_tar, "folder": _read_folder}[kind]
    try:
        for name, f in reader(Path(path), wanted):
            data = f.read(max_member_bytes + 1)
            budget.take(len(data))
            yield name, (data if len(data) <= max_member_bytes else None)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise _damaged(path, exc) from None


def _read_zip(path: Path, wanted: set[str]):
    wanted = set(wanted)                    # each name once: a repeated member is not read again
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = normalise(info.filename)[0]
            if name in wanted and not info.is_dir():
                wanted.discard(name)
                with zf.open(info) as f:
                    yield name, f


def _read_tar(path: Path, wanted: set[str]):
    wanted = set(wanted)
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            name = normalise(m.name)[0]
            if m.isfile() and name in wanted:
                wanted.discard(name)
                f = tf.extractfile(m)
                if f is not None:
                    yield name, f


def _read_folder(root: Path, wanted: set[str]):
    for name in sorted(wanted):
        target = root.joinpath(*name.split("/"))
        if target.is_symlink() or not target.is_file():
            continue
        with open(target, "rb") as f:
            yield name, f
