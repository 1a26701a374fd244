"""Billing tables: an append-only double-entry ledger in integer micro-dollars, each tenant's
account (cached balances, the row locked to reserve atomically), per-job billing (estimate vs
actual, the metering cursor), per-tenant quotas, and the platform's throughput calibration.

Every ledger entry moves `amount` (> 0 micro-dollars) from its `debit` account to its `credit`
account, both accounts of the same tenant, so the sum over all accounts is zero by construction.
An account's balance is credits in minus debits out; `billing_accounts` caches the balances of
`available`, `reserved` and `usage`, and `tunelab admin billing reconcile` proves the cache equals
the sums. Rows are only ever inserted; a correction is a new entry.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, \
    UniqueConstraint
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from .base import Base, TenantOwned, new_id, utcnow


class BillingAccount(TenantOwned, Base):
    __tablename__ = "billing_accounts"
    __table_args__ = (UniqueConstraint("tenant_id", name="uq_billing_accounts_tenant"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("acct_"))
    available: Mapped[int] = mapped_column(BigInteger, default=0)   # micro-dollars the tenant can spend
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)    # held for queued/running jobs
    spent: Mapped[int] = mapped_column(BigInteger, default=0)       # usage charged, all time
    granted: Mapped[int] = mapped_column(BigInteger, default=0)     # grants + top-ups + adjustments, net
    lock_version: Mapped[int] = mapped_column(Integer, default=0)   # bumped to take the write lock first
    # Metering carried between charges: sub-micro-dollar remainders and the serving counters.
    storage_charged_until: Mapped[datetime | None] = mapped_column(default=None)
    storage_remainder: Mapped[int] = mapped_column(BigInteger, default=0)
    served_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    served_billed_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    served_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")   # generated, prompt included
    served_billed_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntry(TenantOwned, Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (CheckConstraint("amount > 0", name="ck_ledger_entries_amount_positive"),
                      Index("ix_ledger_entries_tenant_created", "tenant_id", "created_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))        # grant|topup|adjust|reserve|release|charge|refund|expire
    debit: Mapped[str] = mapped_column(String(24))       # the account the amount leaves
    credit: Mapped[str] = mapped_column(String(24))      # the account it enters
    amount: Mapped[int] = mapped_column(BigInteger)      # micro-dollars, > 0
    job_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    category: Mapped[str | None] = mapped_column(String(16), default=None)   # compute|storage|serving
    quantity: Mapped[int | None] = mapped_column(BigInteger, default=None)    # metered, in `unit`
    unit: Mapped[str | None] = mapped_column(String(24), default=None)        # cpu_ms|gpu_ms|byte_s|requests
    step_from: Mapped[int | None] = mapped_column(Integer, default=None)      # work position range billed:
    step_to: Mapped[int | None] = mapped_column(Integer, default=None)        # (step_from, step_to]
    price_version: Mapped[str | None] = mapped_column(String(40), default=None)
    dedupe_key: Mapped[str | None] = mapped_column(String(120), default=None, unique=True)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)         # grants
    reference: Mapped[str | None] = mapped_column(String(200), default=None)  # a payment or grant id
    memo: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobBilling(TenantOwned, Base):
    """One per job: what was estimated and reserved, what was metered and charged, and the cursor
    that keeps a resumed or retried attempt from being charged again for work already billed."""
    __tablename__ = "job_billing"
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="open")     # open | paused | settled
    device: Mapped[str] = mapped_column(String(32), default="cpu")     # cpu | gpu:<type>
    price_version: Mapped[str] = mapped_column(String(40), default="")
    estimate: Mapped[dict] = mapped_column(default=dict)               # billing.estimate.Estimate.to_dict()
    estimate_cost: Mapped[int] = mapped_column(BigInteger, default=0)  # micro-dollars: point, low, high
    estimate_low: Mapped[int] = mapped_column(BigInteger, default=0)
    estimate_high: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)       # open reservation (cached)
    charged: Mapped[int] = mapped_column(BigInteger, default=0)        # charged so far (cached)
    metered_ms: Mapped[int] = mapped_column(BigInteger, default=0)     # compute measured, every attempt
    billed_ms: Mapped[int] = mapped_column(BigInteger, default=0)      # the part charged (no re-done work)
    charge_remainder: Mapped[int] = mapped_column(BigInteger, default=0)   # sub-micro-dollar carry
    frontier_pos: Mapped[int] = mapped_column(Integer, default=-1)     # furthest work position billed
    frontier_ms: Mapped[int] = mapped_column(BigInteger, default=0)    # compute billed at that position
    meter_seq: Mapped[int] = mapped_column(Integer, default=0)
    wall_ms: Mapped[int] = mapped_column(BigInteger, default=0)        # attempts' wall time, summed
    actual: Mapped[dict] = mapped_column(default=dict)                 # at settlement: vs the estimate
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(default=None)


class TenantQuota(TenantOwned, Base):
    """Limits an operator set for a tenant; NULL = the platform default (billing.quotas.DEFAULTS)."""
    __tablename__ = "tenant_quotas"
    __table_args__ = (UniqueConstraint("tenant_id", name="uq_tenant_quotas_tenant"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("quota_"))
    concurrent_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    gpus: Mapped[int | None] = mapped_column(Integer, default=None)
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    dataset_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(100), default=None)


class Calibration(Base):
    """Throughput on this platform's hardware, per (strategy, model, device): how far finished jobs'
    metered compute was from the estimator's raw prediction. Platform-wide, not tenant data."""
    __tablename__ = "billing_calibration"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)   # strategy|model|device
    factor: Mapped[float] = mapped_column(Float, default=1.0)         # actual / raw, smoothed
    wall_factor: Mapped[float] = mapped_column(Float, default=1.0)    # wall / (compute / cores), smoothed
    spread: Mapped[float] = mapped_column(Float, default=0.3)         # typical relative error, smoothed
    samples: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# `job.billing` for the job object (loaded with the jobs, in one query per list). "Job" by name: the
# jobs table is models.py's, which imports this module (both are on Base's registry once db is imported).
JobBilling.job = relationship("Job", backref=backref("billing", uselist=False, lazy="selectin",
                                                   passive_deletes=True))

BILLING_TENANT_OWNED = [BillingAccount, LedgerEntry, JobBilling, TenantQuota]
