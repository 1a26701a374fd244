"""A job as a local subprocess of the worker (its own session, so signals reach it alone)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from ...security.safe_fs import open_append
from .base import drain


class LocalExecution:
    watch = None            # a sandbox's limits watch (watch.Watch), when there is one

    def __init__(self, proc: subprocess.Popen, log):
        self.proc, self._log, self._q = proc, log, queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            self._reader.join(timeout=5)    # drain what it wrote before exiting
            self._log.close()
        return code

    @property
    def violation(self) -> str | None:
        """Why the job was stopped for going over a limit, if it was."""
        return self.watch.violation if self.watch is not None else None

    def lines(self) -> list[str]:
        return drain(self._q)

    def terminate(self) -> None:
        """SIGTERM to the job process itself (not a wrapper such as bwrap, which would die of it
        and take the job down before it could write its checkpoint)."""
        for proc in self._job_processes():
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)     # its own session: the whole group
            except ProcessLookupError:
                pass

    def _job_processes(self) -> list:
        if self.proc.poll() is not None:
            return []
        try:
            me = psutil.Process(self.proc.pid)
            family = [me, *me.children(recursive=True)]
            return [p for p in family if p.name() not in ("bwrap", "prlimit")
                    and "tunelab.jobs.child" in " ".join(p.cmdline())][:1] or [me]
        except psutil.Error:
            return []


class LocalExecutor:
    name = "local"

    def start(self, spec_path: Path, job_dir: Path, env: dict[str, str], *, readable=(), writable=(),
              gpus: int = 0, program: list[str] | None = None, cpus: int | None = None) -> LocalExecution:
        """program: what runs (default: the job process on spec_path), as for the sandbox; cpus:
        the job's CPUs (the worker's env for it already says so: TUNELAB_JOB_CPUS, threads)."""
        if cpus is not None:
            env = {"TUNELAB_JOB_CPUS": str(cpus), **env}
        log = open_append(job_dir / "job.log")          # never through a link a job left
        argv = program or [sys.executable, "-m", "tunelab.jobs.child", str(spec_path)]
        proc = subprocess.Popen(argv,  # safe: argv list
                                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                                cwd=job_dir, env={**env, "TUNELAB_PARENT_PID": str(os.getpid())},
                                start_new_session=True)
        return LocalExecution(proc, log)
