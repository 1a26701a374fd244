"""Credits, quotas and metering: an append-only double-entry ledger in integer micro-dollars
(ledger), the versioned price sheet (prices, prices.json), estimates calibrated on this
platform's hardware (estimate, work.json), reservations and settlement (settlement), metering
that never charges re-done work twice (metering), storage and serving usage (usage), quotas,
reports and reconciliation. Layer 2: the job flow that uses it lives in jobs.metering and
services.billing."""

from .money import to_micro, usd
from .quotas import QuotaExceeded
from .settlement import InsufficientCredit

__all__ = ["InsufficientCredit", "QuotaExceeded", "to_micro", "usd"]
