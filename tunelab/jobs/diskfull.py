"""A full disk under TUNELAB_HOME while a job runs: how the worker recognises it and what it tells
the tenant.

Retrying cannot help (the next attempt writes the same files onto the same full disk), so a job
that runs out of space fails at once with `disk_full` and a message that says where space is
needed, instead of being retried until its lease runs out. The worker sees the fault either as
an OSError of its own (writing the job's inputs, sealing its artifact, storing its metrics) or
in the job process's error report.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

CODE = "disk_full"
_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How a job process's report says a write found no space: Python's OSError text, Rust's
# (safetensors) StorageFull. torch's stream writer hides the errno ("file write failed"), which is
# why the free space left under the job's folder is also looked at.
_MARKERS = ("No space left on device", "Disk quota exceeded", "StorageFull", "[Errno 28]", "[Errno 122]")
# After a write failed for lack of space, the half-written file still holds what was left: a
# disk that ran out has (next to) nothing free. Below this, the job's failure is the disk's.
_LOW_BYTES = 16 * 1024 * 1024


def is_disk_full(exc: BaseException | None) -> bool:
    """`exc`, or an exception it was raised from, is ENOSPC/EDQUOT."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def job_ran_out(error: dict, folder: Path) -> bool:
    """The job process failed for lack of space: its report says so, or its folder's disk is full."""
    if any(marker in str(error.get("message", "")) for marker in _MARKERS):
        return True
    free = free_bytes(folder)
    return free is not None and free < _LOW_BYTES


def message(home: Path, doing: str) -> str:
    """What the tenant (and the operator reading the job's error) is told."""
    free = free_bytes(home)
    if free is not None and free >= _LOW_BYTES:
        # The home has room: what filled up was the job's own, size-limited /tmp, or a quota.
        return (f"No space left on device while {doing}, though TUNELAB_HOME ({home}) has {free // 2**20} MB "
                f"free: the job's private /tmp (TUNELAB_JOB_TMP_MB) or a disk quota is full. Raise that limit "
                f"or free space, then submit the job again.")
    left = "free space unknown" if free is None else f"{free // 2**20} MB free"
    return (f"No space left under TUNELAB_HOME ({home}, {left}) while {doing}. Free space there "
            f"(or move TUNELAB_HOME to a larger volume), then submit the job again; what this attempt "
            f"half-wrote was removed.")
