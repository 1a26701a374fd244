"""A comparison's limits on the command line, the same locally (`tunelab compare`) and remotely
(`tunelab jobs compare`): `--budget 10m`, `--budget-usd 0.50`, `--exhaustive`. A bad value is a
usage error (argparse: `error: argument --budget: 10x: give a duration such as 90s, 10m or 1h30m`,
exit 2) before any data is read or any request is sent."""

from __future__ import annotations

import argparse
import math

MAX_USD = 10_000.0      # jobs.spec's bound on a compare job's budget_usd


def duration(text: str) -> float:
    """argparse type: '10m' -> 600.0 (engine.budget.parse_duration, which imports no torch)."""
    from ..engine.budget import BudgetError, parse_duration

    try:
        return parse_duration(text)
    except BudgetError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise argparse.ArgumentTypeError(f"{text}: {reason}") from None


def dollars(text: str) -> float:
    """argparse type: '0.50' or '$0.50' -> 0.5; more than 0, at most MAX_USD."""
    try:
        value = float(text.strip().removeprefix("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: give dollars such as 0.50") from None
    if not math.isfinite(value) or not 0 < value <= MAX_USD:
        raise argparse.ArgumentTypeError(f"{text}: must be more than $0 and at most ${MAX_USD:,.0f}")
    return value


def add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=duration, metavar="DURATION",
                   help="stop the comparison after this long (90s, 10m, 1h30m; at most 7 days)")
    p.add_argument("--budget-usd", type=dollars, metavar="DOLLARS",
                   help="stop the comparison once it has used this many dollars of compute (e.g. 0.50)")
    p.add_argument("--exhaustive", action="store_true",
                   help="run every candidate to the end instead of stopping the ones that fall behind early")
