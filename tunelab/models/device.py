"""Which device and precision a run uses: the fastest that is numerically safe here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    # bf16 autocast is only faster than fp32 on CPUs with native bf16 dot products
    # (AVX512-BF16 or AMX); elsewhere it is emulated and slower.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def best_precision(device: str) -> str:
    """'bf16' (autocast; weights stay fp32) or 'no'."""
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "no"


def autocast(device: str, precision: str):
    if precision == "no":
        return torch.autocast(device_type=device, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device, dtype=dtype)
