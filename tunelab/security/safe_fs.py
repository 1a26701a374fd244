"""Files in a folder someone else controls (a job's folder: the sandboxed job can write anything
there, symlinks, FIFOs and hard links included), touched without ever following a link.

Every name is opened relative to the folder's own descriptor (openat-style) with O_NOFOLLOW; a
file the worker writes is created afresh (O_EXCL, which never follows a link either) after
whatever held its name was removed; trees are walked through descriptors (os.fwalk) and removed
with shutil.rmtree(dir_fd=...), which does not follow links. What cannot be opened that way (a
link, a device, a FIFO, a socket, a file with other hard links) is refused or skipped, never
followed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeEntry(OSError):
    """A name in a controlled folder is not what the worker expects (a link, a device...)."""


def open_dir(name: str | Path, dir_fd: int | None = None) -> int:
    """A directory's descriptor; ELOOP/ENOTDIR when `name`'s last component is a link or not a
    folder. Callers start from a path the worker alone controls."""
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


@contextlib.contextmanager
def opened_dir(name: str | Path, dir_fd: int | None = None) -> Iterator[int]:
    fd = open_dir(name, dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def walk_to(root_fd: int, parts: tuple[str, ...] | list[str]) -> Iterator[int]:
    """The sub-folder root/parts[0]/parts[1]/... with no component followed as a link."""
    fds = [root_fd]
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise UnsafeEntry(errno.EINVAL, "not a plain name", part)
            fds.append(open_dir(part, fds[-1]))
        yield fds[-1]
    finally:
        for fd in fds[1:]:
            os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def remove_at(dir_fd: int, name: str) -> None:
    """Remove whatever `name` is (a tree is removed without following links inside it)."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def fresh_dir_at(dir_fd: int, name: str, mode: int = 0o700) -> None:
    """`name` as a new empty folder, whatever was there before."""
    remove_at(dir_fd, name)
    os.mkdir(name, mode, dir_fd=dir_fd)


def write_new_at(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """`name` replaced by a new regular file holding `data` (a link there is removed, not followed)."""
    remove_at(dir_fd, name)
    fd = os.open(name, _NEW_FILE, mode, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer_at(dir_fd: int, name: str, mode: int = 0o600) -> Iterator[io.BufferedWriter]:
    """A new file written under a fresh temporary name, renamed over `name` when the block ends
    without an error (rename replaces a link, it never writes through one)."""
    tmp = f".{name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, _NEW_FILE, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _open_regular(dir_fd: int, name: str, flags: int, mode: int = 0o600) -> int | None:
    """An existing plain file (one link only) opened without following a link and without
    blocking on a FIFO; None when `name` is anything else or missing."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError:          # ELOOP (a link), ENXIO (a FIFO nobody reads), EISDIR, ENOENT...
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return fd


def open_append_at(dir_fd: int, name: str) -> io.BufferedWriter:
    """A log file to append to: the existing one when it is a plain file, else a new one."""
    fd = _open_regular(dir_fd, name, os.O_WRONLY | os.O_APPEND)
    if fd is None:
        remove_at(dir_fd, name)
        fd = os.open(name, _NEW_FILE | os.O_APPEND, 0o600, dir_fd=dir_fd)
    return os.fdopen(fd, "ab")


def open_append(path: Path) -> io.BufferedWriter:
    """open_append_at for `path` whose folder the caller controls (its last component is not
    followed either)."""
    path = Path(path)
    with opened_dir(path.parent) as d:
        return open_append_at(d, path.name)


def tree_bytes(dir_fd: int) -> int:
    """Disk space used under a folder (allocated blocks), links not followed."""
    total = 0
    for _, dirs, files, dfd in os.fwalk(".", dir_fd=dir_fd, follow_symlinks=False):
        for name in dirs + files:
            st = lstat_at(dfd, name)
            total += st.st_blocks * 512 if st else 0
    return total


def tar_regular_tree(parent_fd: int, name: str, out) -> list[str]:
    """Write into `out` an uncompressed tar of the folder parent/name holding its regular files
    and folders only, member names "./<path>" (as `tarfile.add(folder, arcname=".")` writes
    them). Returns what was left out (links, devices, FIFOs, sockets, files with other hard
    links), each with its reason. Raises UnsafeEntry when parent/name is not a plain folder."""
    try:
        root = open_dir(name, parent_fd)
    except OSError as exc:
        raise UnsafeEntry(exc.errno or errno.EINVAL, "not a plain folder", name) from exc
    skipped = []
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            tf.addfile(_dir_info(".", os.fstat(root)))
            for top, dirs, files, dfd in os.fwalk(".", dir_fd=root, follow_symlinks=False):
                for entry in sorted(dirs):
                    st = lstat_at(dfd, entry)
                    if st is not None and stat.S_ISDIR(st.st_mode):
                        tf.addfile(_dir_info(f"{top}/{entry}", st))
                    else:
                        skipped.append(f"{top}/{entry}: {_kind(st)}")
                for entry in sorted(files):
                    reason = _add_regular(tf, dfd, entry, f"{top}/{entry}")
                    if reason:
                        skipped.append(f"{top}/{entry}: {reason}")
    finally:
        os.close(root)
    return skipped


def _add_regular(tf: tarfile.TarFile, dir_fd: int, name: str, arcname: str) -> str | None:
    fd = _open_regular(dir_fd, name, os.O_RDONLY)
    if fd is None:
        st = lstat_at(dir_fd, name)
        return "a file with other hard links" if st and stat.S_ISREG(st.st_mode) else _kind(st)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        info = tarfile.TarInfo(arcname)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
        tf.addfile(info, f)
    return None


def _dir_info(arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(st.st_mtime)
    return info


def _kind(st: os.stat_result | None) -> str:
    if st is None:
        return "vanished"
    mode = st.st_mode
    for test, word in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return word
    return "not a regular file"
