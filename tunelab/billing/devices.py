"""Which priced device this machine's jobs run on: "cpu" (billed per core-second of CPU time) or
"gpu:<type>" (billed per GPU-second of wall time), and how many units a job occupies."""

from __future__ import annotations

import os
from functools import lru_cache

GPU_TYPES = ("h200", "h100", "a100", "l40s", "l4", "t4")


@lru_cache(maxsize=1)
def detect() -> tuple[str, int]:
    """(device, units): ("cpu", cores usable by a job) or ("gpu:h100", 1). TUNELAB_BILLING_DEVICE
    overrides (e.g. a server without a GPU pricing jobs for GPU workers)."""
    forced = os.environ.get("TUNELAB_BILLING_DEVICE")
    if forced:
        return forced, 1 if forced.startswith("gpu") else cpu_cores()
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0).lower()
            kind = next((t for t in GPU_TYPES if t in name), "default")
            return f"gpu:{kind}", 1
    except Exception:     # no torch, or a broken driver: price as CPU
        pass
    return "cpu", cpu_cores()


def cpu_cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return max(os.cpu_count() or 1, 1)


PROBE_FIGURE = "estimator_probe"      # the hardware benchmark's figure of the same probe


@lru_cache(maxsize=1)
def cpu_probe_ms() -> float:
    """Milliseconds this CPU takes for one [512 x 384] @ [384 x 1536] matrix product (a MiniLM
    feed-forward layer on a batch of 32 x 16 tokens) in the precision training runs use here: the
    machine's speed, not its current load. TUNELAB_BILLING_CPU_PROBE_MS fixes it (tests, or a
    server pricing jobs for other workers); else this worker's latest hardware benchmark
    (`tunelab bench hardware`, the median of many runs), else measured now (~0.3 s, once per process)."""
    forced = os.environ.get("TUNELAB_BILLING_CPU_PROBE_MS")
    if forced:
        return float(forced)
    from ..hardware import store

    stored = store.figure(store.latest(store.worker_name()), PROBE_FIGURE)
    return stored if stored else measure_probe_ms()


def measure_probe_ms(runs: int = 40) -> float:
    """The probe, best of `runs` after a warm-up (thread pool, caches)."""
    import time

    import torch

    from ..models.device import autocast, best_precision

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 384, generator=gen), torch.randn(384, 1536, generator=gen)
    best = float("inf")
    with torch.inference_mode(), autocast("cpu", best_precision("cpu")):
        for i in range(runs + 4):
            t0 = time.perf_counter()
            a @ b
            if i >= 4:
                best = min(best, time.perf_counter() - t0)
    return best * 1000
