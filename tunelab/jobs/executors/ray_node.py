"""What runs on a Ray node for one job: a plain class the Ray executor (ray_cluster.py) turns into
an actor holding the job's CPUs/GPUs on the node it lands on.

The job's files come as one encrypted stream (a tar of its spec, inputs, checkpoints and
uploaded model folder; AES-GCM with a key made for this job alone), a chunk per call, so no
shared disk is assumed and nothing readable sits in Ray's object store or its spill files. The
runner unpacks them into a node-local folder of its own (0700), rewrites the paths the job spec
names to that folder, and runs the job with the SandboxExecutor: the sandbox applies on the node
exactly as on a single machine (no network, so the job cannot reach the cluster either). Once
the job exits, its artifact folder, checkpoints and log go back the same way, encrypted, and the
node folder is removed. A runner whose driver died (the worker, SIGKILL) cannot clean up; the
next runner on that node removes folders whose owning process is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...security.crypto import Cipher

CHUNK = 8 * 1024 * 1024          # bytes per call; keeps the object store's share small
JOB, HOME, READABLE = "job", "home", "readable"
STREAM_IN, STREAM_OUT = "in", "out"
# What comes back from the node (relative to the job folder); spec.json and inputs stay there.
RETURNED = ("artifact", "work", "job.log")
EXIT_STOPPED = 5               # jobs/child.py's: stopped before it started (a cancel in transit)


def stream_cipher(key: bytes, tag: str, direction: str) -> Cipher:
    """One key per job; the job and the direction are bound in as associated data, so a chunk
    of one stream cannot be replayed into another."""
    return Cipher(key, f"tunelab-ray:{tag}:{direction}")


def node_root() -> Path:
    """Where runners unpack jobs on this node: TUNELAB_RAY_NODE_DIR, else a folder of this user's
    under the system's temp dir. Node-local disk; never shared."""
    root = Path(os.environ.get("TUNELAB_RAY_NODE_DIR") or Path(tempfile.gettempdir()) / f"tunelab-ray-{os.getuid()}")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def sweep_orphans(root: Path) -> list[str]:
    """Remove the folders of runners that died without cleaning up (named <tag>.<pid>.<random>)."""
    removed = []
    for entry in root.iterdir():
        try:
            pid = int(entry.name.split(".")[-2])
        except (ValueError, IndexError):
            continue
        if not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def extract_regular(src, dest: Path) -> None:
    """Extract a tar stream (file object) into `dest`: regular files and folders only, every name
    kept inside `dest` (tarfile's "data" filter refuses absolute names, '..' and special files)."""
    with tarfile.open(fileobj=src, mode="r|") as tf:
        for member in tf:
            if not (member.isfile() or member.isdir()):
                continue
            tf.extract(member, dest, filter="data")


def add_regular_tree(tf: tarfile.TarFile, path: Path, arcname: str) -> None:
    """Add a file or a folder to `tf` with its regular files and folders only; links are not
    followed (what a job wrote may be anything)."""
    def keep(info: tarfile.TarInfo):
        return info if info.isfile() or info.isdir() else None

    if path.is_symlink() or not path.exists():
        return
    tf.add(str(path), arcname=arcname, recursive=True, filter=keep)


def rewrite(value, mapping: list[tuple[str, str]]):
    """Every string in `value` (nested lists/dicts too) that is one of the mapped paths or under
    one, moved to its node-local place."""
    if isinstance(value, str):
        for old, new in mapping:
            if value == old or value.startswith(old.rstrip("/") + "/"):
                return new + value[len(old.rstrip("/")):]
        return value
    if isinstance(value, list):
        return [rewrite(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: rewrite(v, mapping) for k, v in value.items()}
    return value


@dataclass
class JobPlan:
    """What the driver tells the node about the job (no secret: the key comes separately)."""
    tag: str                                   # the job folder's name, for the node folder's
    job_dir: str                               # the worker's paths, rewritten on the node
    readable: list[str] = field(default_factory=list)      # shipped: readable/<i>
    kept_readable: list[str] = field(default_factory=list)  # not shipped: same path on every node
    env: dict[str, str] = field(default_factory=dict)
    program: list[str] | None = None
    gpus: int = 0
    cpus: int = 1
    processes: int = 1
    limits: dict = field(default_factory=dict)
    insecure: bool = False                     # the worker's admin chose unsandboxed jobs


class JobRunner:
    """One job on one node (an actor: its methods run one at a time, in the order called)."""

    def __init__(self):
        self.root = node_root()
        sweep_orphans(self.root)
        self.folder: Path | None = None
        self.execution = None
        self.code: int | None = None
        self.stop_first: str | None = None       # terminate/kill that came before the job started
        self._incoming = None
        self._outgoing: Path | None = None
        self._early: list[str] = []

    # ---- where ---------------------------------------------------------------------------
    def where(self) -> dict:
        import ray

        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "hostname": socket.gethostname(), "pid": os.getpid(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    # ---- in ------------------------------------------------------------------------------
    def receive(self, tag: str, chunk: bytes) -> int:
        """One encrypted chunk of the job's files, appended to a node-local file (still encrypted)."""
        if self.folder is None:
            self.folder = self.root / f"{_safe(tag)}.{os.getpid()}.{os.urandom(4).hex()}"
            self.folder.mkdir(mode=0o700)
            self._incoming = open(self.folder / "payload.enc", "wb")
        self._incoming.write(chunk)
        return len(chunk)

    def start(self, key: bytes, plan: dict) -> None:
        """Decrypt and unpack what was received, then run the job in the sandbox."""
        plan = JobPlan(**plan)
        if self.folder is None:          # an empty payload (a probe with no files) still needs a folder
            self.receive(plan.tag, b"")
        self._incoming.close()
        local_job, home = self.folder / JOB, self.folder / HOME
        home.mkdir(mode=0o700)
        encrypted = self.folder / "payload.enc"
        if encrypted.stat().st_size:
            with open(encrypted, "rb") as src:
                extract_regular(stream_cipher(key, plan.tag, STREAM_IN).reader(src), self.folder)
        encrypted.unlink()
        local_job.mkdir(mode=0o700, exist_ok=True)
        mapping = [(plan.job_dir, str(local_job))] + \
                  [(path, str(self.folder / READABLE / str(i))) for i, path in enumerate(plan.readable)]
        spec = local_job / "spec.json"
        if spec.is_file():
            spec.write_text(json.dumps(rewrite(json.loads(spec.read_text()), mapping), indent=2))
        if self.stop_first:
            self.code = EXIT_STOPPED if self.stop_first == "terminate" else 137
            return
        self.execution = self._executor(plan).start(
            spec, local_job, self._env(plan, home), gpus=plan.gpus, cpus=plan.cpus,
            readable=[self.folder / READABLE / str(i) for i in range(len(plan.readable))]
            + [Path(p) for p in plan.kept_readable if Path(p).exists()],
            writable=[home], program=rewrite(plan.program, mapping) if plan.program else None)

    def _executor(self, plan: JobPlan):
        from .local import LocalExecutor
        from .sandbox import Limits, SandboxExecutor, sandbox_problem

        if plan.insecure:
            return LocalExecutor()
        problem = sandbox_problem()
        if problem:
            raise RuntimeError(f"this Ray node cannot run jobs: they must run sandboxed and {problem}")
        return SandboxExecutor(Limits(**plan.limits) if plan.limits else None)

    @staticmethod
    def _env(plan: JobPlan, home: Path) -> dict[str, str]:
        """The worker's env for the job, with this node's home, CPU count and GPUs."""
        env = {k: v for k, v in plan.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        env.update(TUNELAB_HOME=str(home), TUNELAB_JOB_CPUS=str(plan.cpus),
                   OMP_NUM_THREADS=str(max(1, plan.cpus // max(1, plan.processes))))
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None and plan.gpus:   # the GPUs Ray gave this actor
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        return env

    # ---- while it runs -------------------------------------------------------------------
    def step(self) -> tuple[list[str], int | None, str | None]:
        """Report lines since the last call, the exit status once it exited, and a limit broken."""
        if self.execution is None:
            return [], self.code, None
        code = self.execution.poll()
        lines = self.execution.lines()
        if code is not None:
            self.code = code
        return lines, code, self.execution.violation

    def terminate(self) -> None:
        if self.execution is None:
            self.stop_first = self.stop_first or "terminate"
        else:
            self.execution.terminate()

    def kill(self) -> None:
        if self.execution is None:
            self.stop_first = "kill"
        else:
            self.execution.kill()

    # ---- out -----------------------------------------------------------------------------
    def pack(self, key: bytes, tag: str) -> int:
        """Once the job exited: its artifact, checkpoints and log, encrypted into one node-local
        file; returns how many chunks `chunk` serves."""
        if self.execution is not None:
            deadline = time.monotonic() + 10
            while self.execution.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        self._outgoing = self.folder / "result.enc"
        local_job = self.folder / JOB
        with open(self._outgoing, "wb") as raw:
            writer = stream_cipher(key, tag, STREAM_OUT).encryptor(raw)
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                for name in RETURNED:
                    add_regular_tree(tf, local_job / name, name)
            writer.close()
        size = self._outgoing.stat().st_size
        return max(1, -(-size // CHUNK))

    def chunk(self, index: int) -> bytes:
        with open(self._outgoing, "rb") as f:
            f.seek(index * CHUNK)
            return f.read(CHUNK)

    def cleanup(self) -> bool:
        """Remove everything of the job from this node (inputs, outputs, home)."""
        if self.execution is not None and self.execution.poll() is None:
            self.execution.kill()
        if self._incoming is not None:
            self._incoming.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            gone = not self.folder.exists()
            self.folder = None
            return gone
        return True


def _safe(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)[:80] or "job"
