"""Credits and usage. Amounts are integer micro-dollars (1e-6 USD); fields ending in `_usd` are
the same amounts as exact decimal strings of dollars."""

from __future__ import annotations

from typing import Any

from .base import Obj


class Balance(Obj):
    object: str = "billing.balance"
    currency: str = "USD"
    available: int
    reserved: int
    spent: int
    granted: int
    available_usd: str
    reserved_usd: str
    spent_usd: str
    granted_usd: str
    in_debt: bool
    price_version: str | None = None
    units: str | None = None


class Estimate(Obj):
    """What a job would cost and take, and whether it would start now (credit and quotas)."""
    object: str = "billing.estimate"
    device: str
    cost: int
    cost_low: int
    cost_high: int
    reserve: int
    cost_usd: str
    cost_range_usd: list[str]
    reserve_usd: str
    wall_seconds: float | None = None
    available: int
    available_usd: str
    would_start: bool
    missing: int
    missing_usd: str
    quota: dict[str, Any] | None = None


class DailyUsage(Obj):
    object: str = "list"
    days: int
    data: list[dict[str, Any]]
    balance: Balance


class JobCost(Obj):
    job_id: str
    state: str
    device: str | None = None
    price_version: str | None = None
    estimate: dict[str, Any]
    reserved: int
    charged: int
    charges: list[dict[str, Any]] | None = None   # only for one job


class JobCostList(Obj):
    object: str = "list"
    data: list[JobCost]


class LedgerPage(Obj):
    object: str = "list"
    data: list[dict[str, Any]]
    last_id: int


class Quotas(Obj):
    object: str = "billing.quotas"
    limits: dict[str, int]
    usage: dict[str, int]
    defaults: dict[str, int]


class PriceSheet(Obj):
    version: str
    effective_from: str
    compute: dict[str, Any]
    storage: dict[str, Any]
    serving: dict[str, Any]
    grants: dict[str, Any]
    unit: str
    batch: dict[str, Any] | None = None       # batch-predict jobs: per_1k_predictions


class Grant(Obj):
    amount: int
    amount_usd: str
    balance: Balance


class Adjustment(Obj):
    entry_id: int | None = None
    resumed_jobs: list[str] = []
    balance: Balance


class QuotaLimits(Obj):
    tenant_id: str
    limits: dict[str, int]


class Reconciliation(Obj):
    ok: bool
    tenants: list[dict[str, Any]]


class CalibrationTable(Obj):
    data: list[dict[str, Any]]
