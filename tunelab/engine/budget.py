"""What a comparison may spend: wall seconds, dollars, or both (whichever is reached first).

Dollars are turned into seconds with the price sheet's compute price for the device a job runs
on (a CPU job pays per core-second, so `--budget-usd 0.50` on 2 cores is 0.50 / (2 x the core-
second price)). "10m", "90s", "1h30m" and plain seconds are accepted wherever people type one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")


class BudgetError(ValueError):
    pass


def parse_duration(text: str | float | int) -> float:
    """'10m' -> 600.0, '1h30m' -> 5400.0, '45' / '45s' -> 45.0. Refuses zero, negatives and junk."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        if not raw or len(raw) > 32:
            raise BudgetError(f"budget {text!r}: give a duration such as 90s, 10m or 1h30m")
        seconds, pos = 0.0, 0
        for match in _PART.finditer(raw):
            if match.start() != pos or not match.group(0):
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2) or "s"]
            pos = match.end()
        if pos != len(raw):
            raise BudgetError(f"budget {text!r}: give a duration such as 90s, 10m or 1h30m")
    if not seconds > 0 or seconds > 7 * 24 * 3600:
        raise BudgetError(f"budget {text!r}: must be more than 0 seconds and at most 7 days")
    return seconds


@dataclass(frozen=True)
class Budget:
    seconds: float | None = None     # wall seconds for the whole comparison
    usd: float | None = None         # dollars of compute for the whole comparison

    def __post_init__(self):
        if self.seconds is not None and not self.seconds > 0:
            raise BudgetError("a time budget must be more than 0 seconds")
        if self.usd is not None and not self.usd > 0:
            raise BudgetError("a dollar budget must be more than $0")

    @property
    def limited(self) -> bool:
        return self.seconds is not None or self.usd is not None

    def limit_seconds(self) -> float | None:
        """The wall seconds the comparison may run: the tighter of the two limits."""
        limits = [s for s in (self.seconds, self._usd_seconds()) if s is not None]
        return min(limits) if limits else None

    def _usd_seconds(self) -> float | None:
        if self.usd is None:
            return None
        from ..billing.devices import detect
        from ..billing.prices import current

        device, units = detect()
        per_second = current().compute_per_hour(device) / 3600 / 1e6 * units   # dollars per wall second
        return self.usd / per_second if per_second > 0 else None

    def describe(self) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(f"{self.seconds:.0f} s")
        if self.usd is not None:
            parts.append(f"${self.usd:.2f}")
        return " or ".join(parts) or "no limit"

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "usd": self.usd, "limit_seconds": self.limit_seconds()}
