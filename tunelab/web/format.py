"""Numbers as people read them (Jinja filters)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation


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


class Money(str):
    """An amount as people read it ("$0.0024"), carrying its exact figure ("$0.002431") for a
    `title=` (hover) and the ledger: `{{ cost.charged }}` prints the short form."""

    exact: str

    def __new__(cls, value):
        out = super().__new__(cls, money(value))
        out.exact = money_exact(value)
        return out


def _dollars(value) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().replace(",", "").replace("$", "", 1) if not isinstance(value, Decimal) else value
    try:
        d = Decimal(text) if not isinstance(text, Decimal) else text
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def money(value) -> str:
    """Dollars for people: cents from $1 up ("$99.999344" -> "$100.00", "$1,234.57"), two
    significant digits below it ("$0.0024", "$0.50"), never fewer than two decimals. Accepts
    dollars as a number, a Decimal or a string ("12.500000", "$0.0042"); micro-dollars are the
    ledger's business and are converted before they get here."""
    d = _dollars(value)
    if d is None:
        return "—"
    sign, d = ("-" if d < 0 else ""), abs(d)
    if d >= 1 or d == 0:
        return f"{sign}${d.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,.2f}"
    exponent = d.adjusted() - 1                  # two significant digits: 0.002431 -> 0.0024
    rounded = d.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_UP)
    if rounded >= 1:
        return f"{sign}$1.00"
    text = format(rounded, "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{frac}"


def money_exact(value) -> str:
    """Full precision, as the ledger keeps it (micro-dollars): "$99.999344"."""
    d = _dollars(value)
    if d is None:
        return "—"
    return f"{'-' if d < 0 else ''}${abs(d).quantize(Decimal('0.000001'), rounding=ROUND_HALF_UP):,f}"


def iso(value) -> str:
    """ISO 8601 with its zone: the database's naive datetimes are UTC, and a browser reads a
    zoneless one as local time (a relative time or a chart's t0 would be off by the offset)."""
    if value is None:
        return ""
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


FILTERS = {"thousands": thousands, "params": params, "size": size, "duration": duration, "score": score,
           "pct": pct, "when": when, "iso": iso, "money": money, "money_exact": money_exact}
