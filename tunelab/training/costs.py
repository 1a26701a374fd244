"""Cost inputs recorded for every run: wall and CPU seconds, peak memory, parameters, tokens."""

from __future__ import annotations

import resource
import threading
import time
from dataclasses import asdict, dataclass

import psutil
import torch


@dataclass
class CostRecord:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    tokens_processed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class ResourceMeter:
    """Measures one block of work. Peak RSS is sampled (the OS only keeps a process-lifetime
    peak, which would charge one run for an earlier one in the same process)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.record = interval, CostRecord()
        self._proc = psutil.Process()
        self._stop = threading.Event()

    def __enter__(self) -> "ResourceMeter":
        self._t0, self._cpu0 = time.perf_counter(), self._cpu()
        self._peak = self._proc.memory_info().rss
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        r = self.record
        r.wall_seconds = time.perf_counter() - self._t0
        r.cpu_seconds = self._cpu() - self._cpu0
        r.peak_rss_mb = self._peak / 2**20
        if torch.cuda.is_available():
            r.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
            r.gpu_seconds = r.wall_seconds


def lifetime_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
