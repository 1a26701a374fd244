"""Limits rlimits cannot express, kept by the worker while a sandboxed job runs.

RLIMIT_FSIZE caps one file and RLIMIT_AS one process; a job could still fill the disk with many
files or take the machine's memory with many processes. Without a cgroup of its own (tunelab
does not assume one it may create), the worker measures instead: the disk its folder takes plus
what it added to its tenant's cache, every `watch_seconds`, and the resident memory of all its
processes together, every second. Over a limit, the whole job (its process group) is killed and
`violation` says why; the worker then fails the job (retrying would hit the same limit).
Measuring is not preventing: a job can overshoot by what it writes or allocates in one interval.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil

from ...security.safe_fs import opened_dir, tree_bytes

MB = 1024 * 1024


def folder_bytes(path: Path) -> int:
    try:
        with opened_dir(path) as fd:
            return tree_bytes(fd)
    except OSError:
        return 0


class Watch:
    def __init__(self, proc, limits, job_dir: Path, shared: list[Path]):
        self.proc, self.limits, self.job_dir, self.shared = proc, limits, Path(job_dir), list(shared)
        self.base = {p: folder_bytes(p) for p in self.shared}
        self.violation: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{proc.pid}")
        self._thread.start()

    def _run(self) -> None:
        memory_every = min(1.0, self.limits.watch_seconds)
        next_disk = time.monotonic() + self.limits.watch_seconds
        while self.proc.poll() is None and self.violation is None:
            time.sleep(memory_every)
            self._check(self.memory_problem())
            if time.monotonic() >= next_disk:
                next_disk = time.monotonic() + self.limits.watch_seconds
                self._check(self.disk_problem())

    def disk_problem(self) -> str | None:
        used = folder_bytes(self.job_dir) + sum(max(0, folder_bytes(p) - self.base[p]) for p in self.shared)
        if used > self.limits.disk_mb * MB:
            return f"its files took {used // MB} MB of disk, over the limit of {self.limits.disk_mb} MB"
        return None

    def memory_problem(self) -> str | None:
        limit = self.limits.memory_total_mb or self.limits.memory_mb
        try:
            root = psutil.Process(self.proc.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        rss = 0
        for p in family:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        if rss > limit * MB:
            return f"its processes used {rss // MB} MB of memory together, over the limit of {limit} MB"
        return None

    def _check(self, problem: str | None) -> None:
        if problem is None or self.proc.poll() is not None:
            return
        self.violation = problem
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)      # its own session: the whole job
        except ProcessLookupError:
            pass
