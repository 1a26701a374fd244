"""Measurements of the machine: dense matmul peak per precision, memory bandwidth, disk read
throughput, host<->device copies on GPUs, and the device's identity.

Each figure is the median of several timed runs with its spread ((p90 - p10) / median): a busy or
throttling machine shows up as spread instead of as a wrong number.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .store import NOISY_SPREAD

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "avx512_vnni")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32}


@dataclass
class Figure:
    name: str
    label: str
    unit: str
    median: float
    spread: float
    runs: int
    noisy: bool
    higher_is_better: bool = True
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def figure_of(name: str, label: str, unit: str, values: list[float], note: str = "",
              higher_is_better: bool = True) -> Figure:
    """The median of the runs and their spread; noisy when the spread is over NOISY_SPREAD."""
    v = np.asarray(values, dtype=np.float64)
    med = float(np.median(v))
    p10, p90 = np.percentile(v, [10, 90])
    spread = float((p90 - p10) / med) if med else 0.0
    return Figure(name, label, unit, med, round(spread, 4), len(values), spread > NOISY_SPREAD,
                  higher_is_better, note)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed_rate(fn, work: float, device: str, runs: int, min_seconds: float) -> list[float]:
    """Rates (work per second) of `runs` runs, each repeating fn for at least min_seconds."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:      # warm-up: thread pool, kernels (oneDNN's JIT), caches
        fn()
        _sync(device)
    rates = []
    for _ in range(runs):
        reps, t0 = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            _sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        rates.append(work * reps / elapsed)
    return rates


def matmul(precision: str = "fp32", device: str = "cpu", n: int | None = None, runs: int = 7,
           min_seconds: float = 0.15) -> Figure:
    """Dense n x n @ n x n in one precision: the peak a training step can hope for."""
    n = n or (8192 if device.startswith("cuda") else 2048)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=device, dtype=DTYPES[precision])
    b = torch.randn(n, n, generator=gen, device=device, dtype=DTYPES[precision])
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        with torch.inference_mode():
            rates = _timed_rate(lambda: a @ b, 2 * n ** 3 / 1e9, device, runs, min_seconds)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    note = ""
    if device == "cpu" and precision == "bf16" and not bf16_native():
        note = "this CPU has no bf16 instructions: bf16 is converted in software (training here runs fp32)"
    where = "GPU" if device.startswith("cuda") else "CPU"
    return figure_of(f"matmul_{precision}" + ("" if device == "cpu" else "_gpu"),
                   f"dense matmul, {precision} ({where})", "GFLOP/s", rates, note)


def memory_bandwidth(device: str = "cpu", mb: int = 256, runs: int = 5) -> Figure:
    """A large tensor copy: bytes read + written per second."""
    n = mb * 2 ** 20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    rates = _timed_rate(lambda: dst.copy_(src), 2 * n * 4 / 1e9, device, runs, 0.1)
    return figure_of("memory_bandwidth" + ("" if device == "cpu" else "_gpu"), f"memory bandwidth ({device})",
                   "GB/s", rates)


def host_device_copies(device: str = "cuda", mb: int = 256, runs: int = 5) -> list[Figure]:
    """Pinned host -> device and device -> host copies (GPUs only)."""
    n = mb * 2 ** 20 // 4
    host = torch.ones(n, pin_memory=True)
    dev = torch.empty(n, device=device)
    back = torch.empty(n, pin_memory=True)
    gb = n * 4 / 1e9
    return [figure_of("h2d", "host to GPU copy", "GB/s",
                    _timed_rate(lambda: dev.copy_(host, non_blocking=True), gb, device, runs, 0.1)),
            figure_of("d2h", "GPU to host copy", "GB/s",
                    _timed_rate(lambda: back.copy_(dev, non_blocking=True), gb, device, runs, 0.1))]


def disk_read(folder: Path, mb: int = 128, runs: int = 3) -> Figure:
    """Sequential read of a file written in `folder` (TUNELAB_HOME: where datasets and checkpoints
    live), evicted from the page cache before each read so the disk, not memory, is measured."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".disk-probe-{os.getpid()}"
    chunk = os.urandom(8 * 2 ** 20)
    rates, evicted = [], hasattr(os, "posix_fadvise")
    try:
        with open(path, "wb") as f:
            for _ in range(max(mb // 8, 1)):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        size = path.stat().st_size
        for _ in range(runs):
            with open(path, "rb", buffering=0) as f:
                if evicted:
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                t0 = time.perf_counter()
                while f.read(8 * 2 ** 20):
                    pass
                rates.append(size / 2 ** 20 / (time.perf_counter() - t0))
    finally:
        path.unlink(missing_ok=True)
    note = "" if evicted else "the page cache could not be dropped: this may be memory speed"
    return figure_of("disk_read", "disk read (TUNELAB_HOME)", "MB/s", rates, note)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return frozenset(line.split(":", 1)[-1].split())


def bf16_native() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return max(os.cpu_count() or 1, 1)


def identity() -> dict:
    """What the figures were measured on: a figure without its machine means nothing."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_mb": p.total_memory // 2 ** 20,
                         "capability": f"{p.major}.{p.minor}", "driver": torch.version.cuda})
    return {"kind": "gpu" if gpus else "cpu", "name": cpu_name(), "cores": cpu_cores(),
            "flags": sorted(cpu_flags() & set(CPU_FLAGS)), "bf16_native": bf16_native(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "gpus": gpus}


def peak_gflops(precision: str = "fp32", device: str = "cpu") -> tuple[float, str]:
    """The matmul peak a job's MFU is measured against, and where it came from: this worker's
    latest stored benchmark, else a short live measurement (once per process, ~1 s)."""
    from . import store

    name = f"matmul_{precision}" + ("" if device == "cpu" else "_gpu")
    stored = store.latest(store.worker_name())
    value = store.figure(stored, name)
    if value:
        return value, f"hardware benchmark of {stored.get('created', '?')}"
    return _live_peak(precision, device), "a 1-second matmul probe in this process"


@lru_cache(maxsize=4)
def _live_peak(precision: str, device: str) -> float:
    return matmul(precision, device, runs=3, min_seconds=0.1).median
