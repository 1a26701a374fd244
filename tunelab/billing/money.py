"""Money is an integer number of micro-dollars (1e-6 USD), never a float. Dollars appear only at
the edges: parsed from a request with Decimal, printed as a fixed-point string."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICRO = 1_000_000


def to_micro(usd: str | int | float | Decimal) -> int:
    """'12.5' -> 12_500_000. Floats are read through their shortest repr, then rounded half-up to
    the micro-dollar (a JSON body's 0.1 is Decimal('0.1'), not 0.1000000000000000055...)."""
    try:
        value = Decimal(str(usd)) if not isinstance(usd, Decimal) else usd
    except InvalidOperation:
        raise ValueError(f"not an amount of dollars: {usd!r}") from None
    if not value.is_finite():
        raise ValueError(f"not an amount of dollars: {usd!r}")
    return int((value * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def usd(micro: int) -> str:
    """12_500_000 -> '12.500000' (exact; the sign kept)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(int(micro)), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def usd_short(micro: int) -> str:
    """For people: '$12.50', '$0.0042' (at least two decimals, more only when they matter)."""
    text = usd(micro).rstrip("0")
    whole, _, frac = text.partition(".")
    frac = frac.ljust(2, "0")
    return f"{'-' if whole.startswith('-') else ''}${whole.lstrip('-')}.{frac}"
