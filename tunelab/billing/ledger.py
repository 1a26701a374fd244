"""Ledger operations. Every change of a tenant's money is an entry moving a positive amount from
one of its accounts to another, posted while the tenant's account row is locked (a row lock on
PostgreSQL, the database's write lock on SQLite), so that the check and the update of a balance
are one atomic step even with many API processes and workers.

Accounts: `available` (spendable), `reserved` (held for jobs), `usage` (spent), `funding` (the
source of grants and top-ups: its balance is minus what was granted), `expired` (lapsed grants).
Hence, at every instant: available + reserved + usage + expired = granted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.ledger import BillingAccount, JobBilling, LedgerEntry
from ..db.models import utcnow
from . import prices

AVAILABLE, RESERVED, USAGE, FUNDING, EXPIRED = "available", "reserved", "usage", "funding", "expired"
ACCOUNTS = (AVAILABLE, RESERVED, USAGE, FUNDING, EXPIRED)
_CACHED = {AVAILABLE: "available", RESERVED: "reserved", USAGE: "spent"}


class BillingError(ValueError):
    pass


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _ensure(session: Session, tenant_id: str) -> None:
    """Create the account row on first use, with the trial grant (exactly once, even when two
    requests race: the unique tenant_id and the grant's dedupe key settle it)."""
    if session.scalar(select(BillingAccount.id).where(BillingAccount.tenant_id == tenant_id)) is not None:
        return
    try:
        with session.begin_nested():
            session.add(BillingAccount(tenant_id=tenant_id))
            session.flush()
    except IntegrityError:
        return
    trial = prices.current().trial
    if trial > 0:
        acct = lock_account(session, tenant_id)
        post(session, acct, "grant", FUNDING, AVAILABLE, trial, memo="trial credit",
             dedupe_key=f"trial:{tenant_id}", price_version=prices.current().version, created_by="platform")


def lock_account(session: Session, tenant_id: str) -> BillingAccount:
    """The tenant's account row, locked for the rest of the transaction and read fresh."""
    _ensure(session, tenant_id)
    q = select(BillingAccount).where(BillingAccount.tenant_id == tenant_id).execution_options(populate_existing=True)
    if _is_postgres(session):
        return session.scalars(q.with_for_update()).one()
    # SQLite: a write first, so this transaction holds the database's write lock before it reads.
    session.execute(update(BillingAccount).where(BillingAccount.tenant_id == tenant_id)
                    .values(lock_version=BillingAccount.lock_version + 1)
                    .execution_options(synchronize_session=False))
    return session.scalars(q).one()


def get_account(session: Session, tenant_id: str) -> BillingAccount:
    """Unlocked, for reading balances."""
    _ensure(session, tenant_id)
    return session.scalars(select(BillingAccount).where(BillingAccount.tenant_id == tenant_id)).one()


def job_billing(session: Session, job_id: str) -> JobBilling | None:
    """Re-read (call after lock_account: the lock serialises every change of a tenant's billing)."""
    return session.scalars(select(JobBilling).where(JobBilling.job_id == job_id)
                           .execution_options(populate_existing=True)).first()


def post(session: Session, acct: BillingAccount, kind: str, debit: str, credit: str, amount: int,
         **fields) -> LedgerEntry | None:
    """Append one entry and update the cached balances (the account must be locked)."""
    if amount < 0:
        raise BillingError(f"ledger amounts are positive; got {amount} for {kind}")
    if amount == 0:
        return None
    if debit not in ACCOUNTS or credit not in ACCOUNTS or debit == credit:
        raise BillingError(f"bad accounts {debit} -> {credit}")
    entry = LedgerEntry(tenant_id=acct.tenant_id, kind=kind, debit=debit, credit=credit, amount=int(amount),
                        **fields)
    session.add(entry)
    for account, sign in ((debit, -1), (credit, 1)):
        if account in _CACHED:
            setattr(acct, _CACHED[account], getattr(acct, _CACHED[account]) + sign * amount)
        elif account == FUNDING:
            acct.granted -= sign * amount
    acct.updated_at = utcnow()
    session.flush()
    return entry


# ---- credit in -------------------------------------------------------------------------------
def grant(session: Session, tenant_id: str, amount: int, *, kind: str = "grant", memo: str = "",
          expires_at: datetime | None = None, reference: str | None = None, created_by: str | None = None,
          dedupe_key: str | None = None) -> LedgerEntry:
    if kind not in ("grant", "topup"):
        raise BillingError("kind is grant or topup")
    if amount <= 0:
        raise BillingError("a grant or top-up is a positive amount")
    acct = lock_account(session, tenant_id)
    return post(session, acct, kind, FUNDING, AVAILABLE, amount, memo=memo, expires_at=expires_at,
                reference=reference, created_by=created_by, dedupe_key=dedupe_key,
                price_version=prices.current().version)


def adjust(session: Session, tenant_id: str, amount: int, *, memo: str, created_by: str | None = None) -> LedgerEntry:
    """An operator's correction: positive adds credit, negative removes it (never below zero)."""
    acct = lock_account(session, tenant_id)
    if amount < 0 and acct.available + amount < 0:
        raise BillingError(f"the adjustment would leave {acct.available + amount} micro-dollars available")
    debit, credit = (FUNDING, AVAILABLE) if amount > 0 else (AVAILABLE, FUNDING)
    return post(session, acct, "adjust", debit, credit, abs(amount), memo=memo, created_by=created_by)


def expire_grants(session: Session, tenant_id: str, now: datetime | None = None) -> int:
    """Lapse what is left of grants past their expiry: credit is spent oldest-expiring first, so a
    lapsed grant keeps only what usage has not yet consumed. Returns micro-dollars expired."""
    now = now or utcnow()
    acct = lock_account(session, tenant_id)
    entries = session.scalars(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id)
                              .order_by(LedgerEntry.id)).all()
    grants = [e for e in entries if e.kind in ("grant", "topup") and e.credit == AVAILABLE]
    lapsed = {e.reference for e in entries if e.kind == "expire"}
    consumed = sum(e.amount for e in entries if e.kind == "charge") + acct.reserved
    consumed += sum(e.amount for e in entries if e.kind == "adjust" and e.debit == AVAILABLE)
    total = 0
    order = sorted(grants, key=lambda e: (e.expires_at is None, e.expires_at or now, e.id))
    for g in order:
        used = min(consumed, g.amount)
        consumed -= used
        if g.expires_at is None or g.expires_at > now or f"entry:{g.id}" in lapsed:
            continue
        left = min(g.amount - used, max(acct.available, 0))
        if left > 0:
            post(session, acct, "expire", AVAILABLE, EXPIRED, left, reference=f"entry:{g.id}",
                 memo=f"grant {g.id} expired")
            total += left
    return total


# ---- jobs ------------------------------------------------------------------------------------
def reserve(session: Session, acct: BillingAccount, jb: JobBilling, amount: int, memo: str = "") -> None:
    post(session, acct, "reserve", AVAILABLE, RESERVED, amount, job_id=jb.job_id, memo=memo)
    jb.reserved += amount


def release(session: Session, acct: BillingAccount, jb: JobBilling, memo: str = "") -> int:
    amount = jb.reserved
    post(session, acct, "release", RESERVED, AVAILABLE, amount, job_id=jb.job_id, memo=memo)
    jb.reserved = 0
    return amount


def charge(session: Session, acct: BillingAccount, jb: JobBilling, amount: int, **meter) -> LedgerEntry | None:
    """Usage of a job, drawn from its reservation. A charge larger than what is left reserved (the
    compute between the last check and the job's checkpoint) first moves the shortfall into the
    reservation, even if that takes `available` below zero: usage is charged exactly as used."""
    if amount <= 0:
        return None
    if amount > jb.reserved:
        reserve(session, acct, jb, amount - jb.reserved, memo="overrun: usage beyond the reservation")
    entry = post(session, acct, "charge", RESERVED, USAGE, amount, job_id=jb.job_id, category="compute", **meter)
    jb.reserved -= amount
    jb.charged += amount
    return entry


def charged_quantity(session: Session, job_id: str) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.quantity), 0))
                              .where(LedgerEntry.job_id == job_id, LedgerEntry.kind == "charge")) or 0)


# ---- reading ---------------------------------------------------------------------------------
def sums(session: Session, tenant_id: str) -> dict[str, int]:
    """Each account's balance from the entries themselves: credits in minus debits out."""
    out = dict.fromkeys(ACCOUNTS, 0)
    for col, sign in ((LedgerEntry.credit, 1), (LedgerEntry.debit, -1)):
        rows = session.execute(select(col, func.sum(LedgerEntry.amount)).where(LedgerEntry.tenant_id == tenant_id)
                               .group_by(col)).all()
        for account, total in rows:
            out[account] = out.get(account, 0) + sign * int(total or 0)
    return out
