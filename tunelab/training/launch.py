"""Running one command on N data-parallel ranks through torch's elastic launcher (torchrun's engine,
in this process: it becomes the ranks' agent).

The agent restarts every rank when one dies (up to `max_restarts`; they resume from the last
checkpoint) and stops them when it gets SIGTERM (they checkpoint and stop). Exit statuses are the
job's (jobs/child.py): a rank records its status in a folder the agent reads, and exits 0 for any
status that is an answer (done, the user's data, a stop): only a crash (a signal, status 1)
counts as a failure that a restart may cure. Ranks die with the agent (PR_SET_PDEATHSIG): torch
starts each in its own session, out of reach of a kill of the job's process group.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Callable

_LAUNCHER = "TUNELAB_LAUNCHER_PID"
_STATUS = "TUNELAB_RANK_STATUS_DIR"
# Statuses a job's rank reports and exits 0 with: answers, not crashes (jobs/child.py EXIT_*).
ANSWERS = (0, 3, 4, 5)
SHUTDOWN_SECONDS = 20      # a rank's time to checkpoint after SIGTERM before the agent kills it


def is_rank() -> bool:
    """This process is one of launch()'s ranks."""
    return _LAUNCHER in os.environ and "RANK" in os.environ


def die_with(parent: int) -> None:
    """This process gets SIGKILL when its parent dies, whatever kills the parent; it exits at once
    when the parent (`parent`, a pid) is already gone."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:       # the parent died before prctl took effect
        os._exit(1)


def join_as_rank() -> None:
    """Called first thing in a rank: die with the agent, whatever kills it."""
    die_with(int(os.environ[_LAUNCHER]))


def rank_exit(code: int, error: str | None = None, answers: tuple[int, ...] = ANSWERS) -> int:
    """The status a rank exits with, its real one recorded for the agent (rank 0's is the run's).
    answers: the statuses that end a rank normally (the job process's by default)."""
    folder = os.environ.get(_STATUS)
    if not folder:
        return code
    rank, attempt = os.environ.get("RANK", "0"), os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    path = Path(folder) / f"rank{rank}-attempt{int(attempt):04d}.json"
    path.write_text(json.dumps({"code": code, "error": error}))
    return 0 if code in answers else code


def _rank0(folder: Path) -> dict | None:
    """Rank 0's record of the last attempt, if it got as far as writing one."""
    records = sorted(folder.glob("rank0-attempt*.json"))
    return json.loads(records[-1].read_text()) if records else None


def threads_per_rank(cpus: int, processes: int) -> int:
    return max(1, cpus // processes)


def launch(argv: list[str], processes: int, *, max_restarts: int, cpus: int, env: dict | None = None,
           report: Callable[[str], None] | None = None) -> int:
    """Run `[sys.executable, *argv]` on `processes` ranks; return rank 0's status. `report`: told
    why, when the ranks failed for good (which rank, which signal or status)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with tempfile.TemporaryDirectory(prefix="tunelab-ranks-") as status:
        threads = str(threads_per_rank(cpus, processes))
        # One machine: the ranks meet on the loopback interface, all the network a sandboxed job has.
        # A restart gets a fresh store for the ranks' process group: in the agent's own (shared by
        # default) the dead ranks' addresses stay, and gloo's new ranks try to reach them.
        extra = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, _LAUNCHER: str(os.getpid()),
                 _STATUS: status, "GLOO_SOCKET_IFNAME": "lo", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
                 **(env or {})}
        saved = {k: os.environ.get(k) for k in extra}
        os.environ.update(extra)        # the agent passes its own environment to the ranks
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=str(uuid.uuid4()),
                              rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", rdzv_configs={"is_host": True},
                              local_addr="127.0.0.1", max_restarts=max_restarts, monitor_interval=0.5,
                              shutdown_timeout=SHUTDOWN_SECONDS)
        # SIGTERM before the agent has its own handler in place (ranks starting): stop at once
        def stop_now(signum, frame):
            raise SignalException(f"got signal {signum} while starting the ranks", sigval=signal.Signals(signum))
        previous = signal.signal(signal.SIGTERM, stop_now) if _main_thread() else None
        try:
            elastic_launch(config, sys.executable)(*argv)
        except ChildFailedError as exc:
            record = _rank0(Path(status))
            why = "; ".join(f"rank {f.local_rank} {_died(f)}" for _, f in sorted(exc.failures.items()))
            detail = f" (rank 0: {record['error']})" if record and record.get("error") else ""
            if report:
                report(f"{processes} training processes failed after {max_restarts} restart(s): {why}{detail}")
            return 1
        except SignalException as exc:       # SIGTERM: the ranks were asked to stop, then waited for
            record = _rank0(Path(status))
            return record["code"] if record else 128 + int(exc.sigval)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        record = _rank0(Path(status))
        return record["code"] if record else 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _died(failure) -> str:
    if failure.signal_name() not in ("", "<N/A>", None) and failure.exitcode < 0:
        return f"was killed by {failure.signal_name()}"
    return f"exited with status {failure.exitcode}"
