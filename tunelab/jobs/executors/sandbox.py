"""A job inside bubblewrap: no network, a read-only system, its inputs read-only, only its own job
folder (and its tenant's cache) writable, nothing else of TUNELAB_HOME visible (no database, no
keys, no other tenant), a scrubbed environment, and rlimits (address space, CPU time, file
size, processes) applied by prlimit before Python starts."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .local import LocalExecution

# What Python and its native libraries need from /etc (nothing secret).
_ETC = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/nsswitch.conf", "/etc/passwd",
        "/etc/group", "/etc/localtime", "/etc/alternatives"]
_PASS_ENV = ["LANG", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM",
             "TUNELAB_MAX_UPLOAD_MB", "TUNELAB_MAX_ROWS", "CUDA_VISIBLE_DEVICES", "TUNELAB_CATALOG"]


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 20_000          # address space; torch reserves more than it touches
    cpu_seconds: int = 24 * 3600
    file_mb: int = 20_000            # largest file the job may write
    processes: int = 512             # threads count too

    @classmethod
    def from_env(cls) -> "Limits":
        d = cls()
        return cls(**{f: int(os.environ.get(f"TUNELAB_JOB_{f.upper()}", getattr(d, f)))
                      for f in ("memory_mb", "cpu_seconds", "file_mb", "processes")})


@lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """None when bubblewrap can start a sandbox here; else why not (and what to do)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    if shutil.which("prlimit") is None:
        return "prlimit is not installed (Debian: apt-get install util-linux)"
    try:
        r = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot run: {exc}"
    if r.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {r.stderr.strip()[:300]}"
    return None


def _code_roots() -> list[str]:
    """Python, its libraries, and tunelab itself (an editable install lives outside site-packages)."""
    import tunelab

    roots = {sys.base_prefix, sys.prefix, str(Path(tunelab.__file__).resolve().parent)}
    roots.add(str(Path(sys.executable).resolve().parent.parent))
    return sorted(r for r in roots if Path(r).exists())


def build_argv(spec_path: Path, job_dir: Path, *, readable: list[Path], writable: list[Path],
               env: dict[str, str], limits: Limits, program: list[str] | None = None) -> list[str]:
    """program: what runs inside (default: the job process on spec_path); tests run probes."""
    # No --new-session: stdin is /dev/null and the worker starts us in a session of our own, so
    # there is no terminal to inject into; staying in that session lets the worker signal the job.
    argv = [shutil.which("bwrap"), "--unshare-all", "--die-with-parent",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for system in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.exists(system):
            argv += ["--ro-bind", system, system]
    for path in _ETC:
        argv += ["--ro-bind-try", path, path]
    for path in _code_roots():
        argv += ["--ro-bind", path, path]
    for dev in glob.glob("/dev/nvidia*"):          # a GPU, when there is one
        argv += ["--dev-bind", dev, dev]
    for path in readable:
        argv += ["--ro-bind", str(path), str(path)]
    for path in [job_dir, *writable]:
        argv += ["--bind", str(path), str(path)]
    argv += ["--clearenv", "--chdir", str(job_dir)]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--", shutil.which("prlimit"), f"--as={limits.memory_mb * 1024 * 1024}",
             f"--cpu={limits.cpu_seconds}", f"--fsize={limits.file_mb * 1024 * 1024}",
             f"--nproc={limits.processes}", "--",
             *(program or [sys.executable, "-m", "tunelab.jobs.child", str(spec_path)])]
    return argv


def sandbox_env(env: dict[str, str], home: Path) -> dict[str, str]:
    clean = {k: env[k] for k in _PASS_ENV if k in env}
    clean.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME="/tmp", TUNELAB_HOME=str(home),
                 TUNELAB_SANDBOXED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                 PYTHONDONTWRITEBYTECODE="1")
    return clean


class SandboxExecutor:
    name = "sandbox"

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits.from_env()

    def start(self, spec_path: Path, job_dir: Path, env: dict[str, str], *, readable: list[Path] = (),
              writable: list[Path] = (), program: list[str] | None = None) -> LocalExecution:
        home = Path(env.get("TUNELAB_HOME", job_dir))
        argv = build_argv(spec_path, job_dir, readable=list(readable), writable=[home, *writable],
                          env=sandbox_env(env, home), limits=self.limits, program=program)
        log = open(job_dir / "job.log", "ab")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                                cwd=job_dir, env={}, start_new_session=True)
        return LocalExecution(proc, log)
