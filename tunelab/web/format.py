"""Numbers as people read them (Jinja filters)."""

from __future__ import annotations

from datetime import datetime, timezone


def thousands(n) -> str:
    if n is None:
        return "—"
    return f"{n:,.0f}" if isinstance(n, (int, float)) else str(n)


def params(n) -> str:
    if not n:
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def size(n) -> str:
    if n is None:
        return "—"
    for unit, s in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= s:
            return f"{n / s:.1f} {unit}"
    return f"{int(n)} B"


def duration(seconds) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 1:
        return "under 1 s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def score(x) -> str:
    return "—" if x is None else f"{float(x):.3f}"


def pct(x) -> str:
    return "—" if x is None else f"{100 * float(x):.1f}%"


def when(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    ago = (datetime.now(timezone.utc) - value).total_seconds()
    if ago < 60:
        return "just now"
    if ago < 3600:
        return f"{ago // 60:.0f} min ago"
    if ago < 86400:
        return f"{ago // 3600:.0f} h ago"
    return value.strftime("%Y-%m-%d")


def iso(value) -> str:
    return value.isoformat() if value is not None else ""


FILTERS = {"thousands": thousands, "params": params, "size": size, "duration": duration, "score": score,
           "pct": pct, "when": when, "iso": iso}
