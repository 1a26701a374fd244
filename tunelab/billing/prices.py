"""The price sheet: a versioned data file (prices.json, or TUNELAB_PRICE_SHEET), integer
micro-dollars per unit. Compute is priced per CPU core-hour or per GPU-hour by GPU type, storage
per GB-day, serving per 1K requests (and per 1K tokens, for generative models)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

DEFAULT_SHEET = Path(__file__).with_name("prices.json")
MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class PriceSheet:
    version: str
    effective_from: datetime
    cpu_core_hour: int
    gpu_hour: dict
    gb_day: int
    per_1k_requests: int
    per_1k_tokens: int
    trial: int
    per_1k_batch_predictions: int = 0     # batch-predict jobs: per 1,000 rows labelled (compute metered apart)

    def compute_per_hour(self, device: str) -> int:
        """Micro-dollars per hour of one unit of `device`: a CPU core ("cpu") or a GPU ("gpu:h100")."""
        if device == "cpu":
            return self.cpu_core_hour
        kind = device.split(":", 1)[1] if ":" in device else "default"
        return int(self.gpu_hour.get(kind, self.gpu_hour["default"]))

    def to_dict(self) -> dict:
        return {"version": self.version, "effective_from": self.effective_from.isoformat(),
                "compute": {"cpu_core_hour": self.cpu_core_hour, "gpu_hour": dict(self.gpu_hour)},
                "storage": {"gb_day": self.gb_day},
                "serving": {"per_1k_requests": self.per_1k_requests, "per_1k_tokens": self.per_1k_tokens},
                "batch": {"per_1k_predictions": self.per_1k_batch_predictions},
                "grants": {"trial": self.trial}, "unit": "micro-dollars"}


def _parse(raw: dict) -> PriceSheet:
    compute, serving = raw["compute"], raw.get("serving", {})
    gpu = {k: int(v) for k, v in compute.get("gpu_hour", {}).items()}
    gpu.setdefault("default", max(gpu.values(), default=0))
    for name, value in [("cpu_core_hour", compute["cpu_core_hour"]), *gpu.items()]:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"price sheet {raw.get('version')}: {name} must be a non-negative integer")
    return PriceSheet(version=str(raw["version"]),
                      effective_from=datetime.fromisoformat(raw["effective_from"].replace("Z", "+00:00")),
                      cpu_core_hour=int(compute["cpu_core_hour"]), gpu_hour=gpu,
                      gb_day=int(raw.get("storage", {}).get("gb_day", 0)),
                      per_1k_requests=int(serving.get("per_1k_requests", 0)),
                      per_1k_tokens=int(serving.get("per_1k_tokens", 0)),
                      trial=int(raw.get("grants", {}).get("trial", 0)),
                      per_1k_batch_predictions=int(raw.get("batch", {}).get("per_1k_predictions", 0)))


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[PriceSheet, ...]:
    data = json.loads(Path(path).read_text())
    sheets = sorted((_parse(s) for s in data["sheets"]), key=lambda s: s.effective_from)
    if not sheets:
        raise ValueError(f"{path}: no price sheet")
    return tuple(sheets)


def sheet_path() -> str:
    return os.environ.get("TUNELAB_PRICE_SHEET") or str(DEFAULT_SHEET)


def current(now: datetime | None = None) -> PriceSheet:
    """The sheet in effect now: the newest whose effective_from has passed (else the oldest)."""
    now = now or datetime.now(timezone.utc)
    sheets = _load(sheet_path())
    live = [s for s in sheets if s.effective_from <= now]
    return live[-1] if live else sheets[0]


def all_sheets() -> tuple[PriceSheet, ...]:
    return _load(sheet_path())


def compute_charge(ms: int, per_hour: int, remainder: int = 0) -> tuple[int, int]:
    """(micro-dollars, new remainder) for `ms` milliseconds at `per_hour`: integer arithmetic with
    the sub-micro-dollar remainder carried, so many small charges add up to exactly one big one."""
    total = ms * per_hour + remainder
    return total // MS_PER_HOUR, total % MS_PER_HOUR


def compute_cost(ms: int, per_hour: int) -> int:
    return (ms * per_hour) // MS_PER_HOUR
