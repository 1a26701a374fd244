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
