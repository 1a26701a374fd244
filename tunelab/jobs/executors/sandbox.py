"""A job inside bubblewrap: no network, a read-only system, its inputs read-only, only its own job
folder (and its tenant's cache) writable, nothing else of TUNELAB_HOME visible (no database, no
keys, no other tenant), a scrubbed environment, no capabilities, no nested user namespace, a
seccomp filter (seccomp.py), only the GPUs it reserved (gpus.py), a bounded /tmp, rlimits
(address space, CPU time, file size, processes) applied by prlimit before Python starts, and a
watch (watch.py) on the disk its folders take and the memory of all its processes together."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...security.safe_fs import open_append
from . import gpus as gpu_nodes
from . import seccomp
from .local import LocalExecution
from .watch import Watch

# What Python and its native libraries need from /etc (nothing secret).
_ETC = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/nsswitch.conf", "/etc/passwd",
        "/etc/group", "/etc/localtime", "/etc/alternatives",
        "/etc/hosts"]       # "localhost", where a data-parallel job's ranks meet (training/launch.py)
_PASS_ENV = ["LANG", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM",
             "TUNELAB_MAX_UPLOAD_MB", "TUNELAB_MAX_ROWS", "CUDA_VISIBLE_DEVICES", "TUNELAB_CATALOG",
             "TUNELAB_SHARED_MODELS", "TUNELAB_JOB_CPUS", "TUNELAB_DDP_MAX_RESTARTS"]


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 20_000          # address space; torch reserves more than it touches
    cpu_seconds: int = 24 * 3600
    file_mb: int = 20_000            # largest file the job may write
    processes: int = 512             # threads count too
    disk_mb: int = 50_000            # its folder, plus what it adds to its tenant's cache
    memory_total_mb: int = 0         # resident memory of all its processes together; 0: memory_mb
    tmp_mb: int = 2_048              # its private /tmp (memory-backed)
    watch_seconds: float = 5.0       # how often disk and memory are measured

    @classmethod
    def from_settings(cls, settings=None) -> "Limits":
        """The operator's limits: settings.job_<field> (TUNELAB_JOB_<FIELD>)."""
        from ...settings import get_settings

        settings = settings or get_settings()
        return cls(**{f: getattr(settings, f"job_{f}") for f in cls.__dataclass_fields__})


# No capabilities, and no user namespace of its own inside (it could be the start of an escape
# through a kernel bug; a job has no use for one): bubblewrap's own options (0.8+).
_HARDEN = ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--die-with-parent"]


@lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """None when bubblewrap can start a hardened sandbox here; else why not (and what to do)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    if shutil.which("prlimit") is None:
        return "prlimit is not installed (Debian: apt-get install util-linux)"
    try:
        fd = seccomp.filter_fd()
    except (seccomp.SeccompUnavailable, OSError) as exc:
        return f"its seccomp filter cannot be built: {exc}"
    try:
        r = subprocess.run([bwrap, *_HARDEN, "--seccomp", str(fd), "--ro-bind", "/", "/", "true"],  # safe: fixed argv
                           capture_output=True, text=True, timeout=20, pass_fds=[fd])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot run: {exc}"
    finally:
        os.close(fd)
    if r.returncode != 0:
        return f"bubblewrap (0.8 or later) cannot create a hardened sandbox here: {r.stderr.strip()[:300]}"
    return None


def _code_roots() -> list[str]:
    """Python, its libraries, and tunelab itself (an editable install lives outside site-packages)."""
    import tunelab

    roots = {sys.base_prefix, sys.prefix, str(Path(tunelab.__file__).resolve().parent)}
    roots.add(str(Path(sys.executable).resolve().parent.parent))
    return sorted(r for r in roots if Path(r).exists())


def build_argv(spec_path: Path, job_dir: Path, *, readable: list[Path], writable: list[Path],
               env: dict[str, str], limits: Limits, program: list[str] | None = None,
               seccomp_fd: int | None = None, gpu_binds: gpu_nodes.GpuBinds | None = None) -> list[str]:
    """program: what runs inside (default: the job process on spec_path); tests run probes."""
    # No --new-session: stdin is /dev/null and the worker starts us in a session of our own, so
    # there is no terminal to inject into; staying in that session lets the worker signal the job.
    argv = [shutil.which("bwrap"), *_HARDEN, "--proc", "/proc", "--dev", "/dev",
            "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    for system in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.exists(system):
            argv += ["--ro-bind", system, system]
    for path in _ETC:
        argv += ["--ro-bind-try", path, path]
    for path in _code_roots():
        argv += ["--ro-bind", path, path]
    argv += gpu_nodes.argv(gpu_binds or gpu_nodes.GpuBinds([], [], None))      # only the GPUs it reserved
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
        self.limits = limits or Limits.from_settings()

    def start(self, spec_path: Path, job_dir: Path, env: dict[str, str], *, readable: list[Path] = (),
              writable: list[Path] = (), gpus: int = 0, program: list[str] | None = None,
              cpus: int | None = None) -> LocalExecution:
        """cpus: the job's CPUs (its env already carries TUNELAB_JOB_CPUS and the thread counts)."""
        if cpus is not None:
            env = {"TUNELAB_JOB_CPUS": str(cpus), **env}
        home = Path(env.get("TUNELAB_HOME", job_dir))
        binds = gpu_nodes.reserved(gpus, env.get("CUDA_VISIBLE_DEVICES"))
        if binds.devices:          # inside, CUDA sees exactly the devices bound, numbered from 0
            env = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
        filter_fd = seccomp.filter_fd()
        try:
            argv = build_argv(spec_path, job_dir, readable=list(readable), writable=[home, *writable],
                              env=sandbox_env(env, home), limits=self.limits, program=program,
                              seccomp_fd=filter_fd, gpu_binds=binds)
            log = open_append(job_dir / "job.log")          # never through a link the job left
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,  # safe: argv list
                                    text=True, cwd=job_dir, env={}, start_new_session=True, pass_fds=[filter_fd])
        finally:
            os.close(filter_fd)
        execution = LocalExecution(proc, log)
        execution.watch = Watch(proc, self.limits, job_dir, [p for p in {home, *writable} if p != job_dir])
        return execution
