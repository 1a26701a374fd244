"""One model server process of a deployment (a replica), as the supervisor sees it: started
through a job executor, watched, stopped; and the model folders it reads (sealed ones decrypted
into the deployment's run folder only while a replica loads)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import psutil

from ..security.storage import SEALED, open_sealed
from .client import ServerClient
from .config import ServerConfig

# The server process gets no secret from the API's environment (as jobs: jobs/worker.child_env).
_SECRET_MARKERS = ("DATABASE_URL", "SECRET", "PASSWORD", "TOKEN", "API_KEY", "MASTER_KEY")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STOP_GRACE_SECONDS = 5.0


def server_env(run_folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not any(m in k.upper() for m in _SECRET_MARKERS) and k != "TUNELAB_PARENT_PID"}
    # Under the sandbox, TUNELAB_HOME is the one writable folder besides the replica's own.
    return env | {"TUNELAB_HOME": str(run_folder), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_folder(home: Path, deployment_id: str) -> Path:
    if not _SAFE_ID.match(deployment_id):
        raise ValueError(f"deployment id {deployment_id!r} is not a safe folder name")
    folder = Path(home) / "serving" / deployment_id
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def is_sealed(path: str | Path) -> bool:
    return str(path).endswith(SEALED)


def missing_folders(models: dict[str, str], base: str | None) -> list[str]:
    """What a deployment names that is not there (checked before any process starts: retrying
    would not make a folder appear)."""
    out = [f"model {name!r}: {path}" for name, path in models.items()
           if not (Path(path).is_file() if is_sealed(path) else Path(path).is_dir())]
    if base is not None and not Path(base).is_dir():
        out.append(f"base model: {base}")
    return out


def plaintext_folders(home: Path, tenant_id: str, models: dict[str, str], folder: Path) -> dict[str, Path]:
    """Served name -> a folder a server can read: as stored, or sealed ones decrypted into
    folder/models/<n> (0700; the caller deletes them once its replicas are ready)."""
    out, plain = {}, folder / "models"
    for n, (name, path) in enumerate(sorted(models.items())):
        if not is_sealed(path):
            out[name] = Path(path)
            continue
        dest = plain / str(n)
        if not dest.is_dir():
            plain.mkdir(mode=0o700, exist_ok=True)
            open_sealed(Path(home), tenant_id, Path(path), dest)
        out[name] = dest
    return out


def forget_plaintext(folder: Path) -> None:
    shutil.rmtree(folder / "models", ignore_errors=True)


class Replica:
    """One server process: its folder (run/<deployment>/r<n>: socket, config, job.log), its
    execution, and what the monitor knows of it."""

    def __init__(self, index: int, run: Path, activity):
        self.index = index
        self.folder = run / f"r{index}"
        self.folder.mkdir(mode=0o700, exist_ok=True)
        self.socket = self.folder / "server.sock"
        self.client = ServerClient(self.socket, activity=activity)
        self.execution = None
        self.state = "stopped"           # "loading" | "ready" | "stopped"
        self.pid: int | None = None      # the server's own pid (inside a sandbox: not bwrap's)
        self.restarts = 0                # starts after an exit (a crash, or a failed start)
        self.failures = 0                # failed starts in a row (exited before it was ready)
        self.started_at = 0.0
        self.next_start = 0.0            # back-off after a failed start
        self._log_offset = 0

    @property
    def log(self) -> Path:
        return self.folder / "job.log"

    def start(self, executor, config: ServerConfig, env: dict[str, str], readable: list[Path]) -> None:
        config_path = self.folder / "server.json"
        config_path.write_text(config.to_json(), encoding="utf-8")
        try:
            os.unlink(self.socket)       # a predecessor's: never mistaken for the new server
        except FileNotFoundError:
            pass
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.execution = executor.start(config_path, self.folder, env, readable=readable, writable=[],
                                        program=[sys.executable, "-m", "tunelab.serving.process", str(config_path)])
        self.state, self.pid, self.started_at = "loading", None, time.monotonic()

    def exited(self) -> int | None:
        if self.execution is None:
            return None
        self.execution.lines()           # drained: nothing is read from stdout, it must not pile up
        return self.execution.poll()

    def alive(self) -> bool:
        execution = self.execution
        return execution is not None and execution.proc.poll() is None

    def find_pid(self) -> int | None:
        """The server process itself: the executor's process, or its descendant under bwrap."""
        if self.pid is None and self.execution is not None:
            try:
                root = psutil.Process(self.execution.proc.pid)
                family = [root, *root.children(recursive=True)]
                servers = [p for p in family if p.name() not in ("bwrap", "prlimit")]
                self.pid = servers[0].pid if servers else None
            except psutil.Error:
                return None
        return self.pid

    def ask_to_stop(self):
        """SIGTERM to the server itself (not to bwrap, whose death would kill it at once): it
        ends its answers within its grace. Returns the execution to wait for (None: nothing ran)."""
        pid = self.find_pid()
        execution, self.execution, self.state, self.pid = self.execution, None, "stopped", None
        if execution is None or execution.poll() is not None:
            return None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return execution

    @staticmethod
    def finish_stop(execution, deadline: float) -> None:
        """Past the deadline, the whole process group is killed; returns once it is gone."""
        while execution.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        execution.kill()
        end = time.monotonic() + 5
        while execution.poll() is None and time.monotonic() < end:
            time.sleep(0.02)

    def stop(self) -> None:
        execution = self.ask_to_stop()
        if execution is not None:
            self.finish_stop(execution, time.monotonic() + STOP_GRACE_SECONDS)

    def log_tail(self, lines: int = 12) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(self._log_offset)
                text = f.read()[-20_000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def view(self) -> dict:
        return {"pid": self.pid, "state": self.state, "restarts": self.restarts}
