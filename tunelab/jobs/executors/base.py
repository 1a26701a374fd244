"""The executor interface, kept small: start a job process from its spec file; then poll it,
read its report lines, ask it to stop, or kill it."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Protocol


class Execution(Protocol):
    def poll(self) -> int | None: ...                 # exit status once finished
    def lines(self) -> list[str]: ...                 # report lines received since the last call
    def terminate(self) -> None: ...                  # graceful: checkpoint and stop
    def kill(self) -> None: ...
    @property
    def violation(self) -> str | None: ...          # set when stopped for going over a limit


class Executor(Protocol):
    name: str

    def start(self, spec_path: Path, job_dir: Path, env: dict[str, str], *, readable: list[Path] = (),
              writable: list[Path] = (), gpus: int = 0, program: list[str] | None = None,
              cpus: int | None = None) -> Execution:
        """readable: inputs the job may read (datasets, a model folder); writable: besides job_dir;
        gpus: how many GPUs the job reserved (a sandbox passes only those devices); program: what
        runs instead of the job process on spec_path (a model server: serving/replicas.py); cpus:
        the CPUs the worker reserved for it (None: the machine's; a cluster executor asks a node
        for them; env holds TUNELAB_JOB_CPUS and the thread counts that go with them)."""


def drain(q: queue.Queue) -> list:
    """What a reader thread has queued so far, without waiting (an Execution's lines())."""
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out
