"""What a second of this machine costs on the current price sheet, and what that makes a million
tokens or a thousand predictions at a measured speed (a job's efficiency, the Infrastructure page)."""

from __future__ import annotations

from .devices import detect
from .prices import current


def usd_per_second(device: str | None = None, units: int | None = None) -> float:
    """The device's price for the units a job occupies: a CPU job is priced per core, so a job on
    every core of this machine costs cores x the core-second price (its CPU seconds are billed; a
    busy job uses about all of them)."""
    found, cores = detect()
    device = device or found
    units = units if units is not None else cores
    return current().compute_per_hour(device) * units / 3600 / 1e6


def usd_per_million(per_second: float | None, device: str | None = None, units: int | None = None) -> float | None:
    """Dollars for a million of whatever `per_second` counts (tokens, or predictions x 1000)."""
    if not per_second:
        return None
    return usd_per_second(device, units) * 1e6 / per_second
