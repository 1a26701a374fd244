"""Usage that is not a job: bytes stored (per GB-day, accrued between housekeeping passes) and
predictions served (per 1K requests, counted atomically per request, charged in batches)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..db.ledger import BillingAccount
from ..db.models import utcnow
from . import ledger, prices
from .money import usd
from .settlement import InsufficientCredit, unbilled_serving

BYTE_SECONDS_PER_GB_DAY = 10**9 * 86_400


class NoCreditForServing(InsufficientCredit):
    """402: the available credit does not cover the predictions served and not yet billed plus
    this request's (or there is none at all)."""

    def __init__(self, needed: int, available: int):
        super().__init__(needed, available)
        self.args = (f"Insufficient credit: predictions cost {usd(prices.current().per_1k_requests)} USD per "
                     f"1,000 requests and {usd(max(available, 0))} USD is available for {usd(needed)} USD owed "
                     "with this request. Top up to go on serving.",)


def check_served(session: Session, tenant_id: str, requests: int) -> None:
    """Before serving, a cheap read: refuse (NoCreditForServing) when the credit is gone already,
    rather than spend the compute on an answer that will not be given."""
    acct = ledger.get_account(session, tenant_id)
    _refuse_unless_covered(acct, requests)


def count_served(session: Session, tenant_id: str, requests: int) -> None:
    """After serving, one atomic conditional increment, no lock (the request path stays cheap;
    `bill_serving` charges later): counted only while the available credit, above zero, still
    covers every request served and not billed, this one included. A concurrent request that
    took the last of it leaves this one uncounted and refused (NoCreditForServing): the balance
    never goes below zero through serving."""
    if requests <= 0:
        return
    acct = ledger.get_account(session, tenant_id)
    price = prices.current().per_1k_requests
    owed = (BillingAccount.served_requests + requests - BillingAccount.served_billed_requests) * price
    done = session.execute(update(BillingAccount).where(
        BillingAccount.tenant_id == tenant_id, BillingAccount.available > 0, owed <= BillingAccount.available * 1000)
        .values(served_requests=BillingAccount.served_requests + requests)
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        session.refresh(acct)
        raise NoCreditForServing(unbilled_serving(acct, requests), acct.available)


def _refuse_unless_covered(acct: BillingAccount, requests: int) -> None:
    needed = unbilled_serving(acct, requests)
    if acct.available <= 0 or needed > acct.available:
        raise NoCreditForServing(needed, acct.available)


def bill_serving(session: Session, tenant_id: str) -> int:
    acct = ledger.lock_account(session, tenant_id)
    sheet = prices.current()
    new = acct.served_requests - acct.served_billed_requests
    amount = acct.served_requests * sheet.per_1k_requests // 1000 - acct.served_billed_requests * sheet.per_1k_requests // 1000
    if new <= 0 or amount <= 0:
        return 0
    ledger.post(session, acct, "charge", ledger.AVAILABLE, ledger.USAGE, amount, category="serving", quantity=new,
                unit="requests", price_version=sheet.version, memo=f"{new} predictions served")
    acct.served_billed_requests = acct.served_requests
    return amount


def bill_storage(session: Session, tenant_id: str, stored_bytes: int, now: datetime | None = None) -> int:
    """Charge the bytes stored now for the time since the last pass (the first pass only starts
    the clock). The sub-micro-dollar remainder is carried to the next pass."""
    now = now or utcnow()
    acct = ledger.lock_account(session, tenant_id)
    since = acct.storage_charged_until
    acct.storage_charged_until = now
    if since is None or now <= since or stored_bytes <= 0:
        return 0
    sheet = prices.current()
    seconds = int((now - since).total_seconds())
    total = stored_bytes * seconds * sheet.gb_day + acct.storage_remainder
    amount, acct.storage_remainder = divmod(total, BYTE_SECONDS_PER_GB_DAY)
    ledger.post(session, acct, "charge", ledger.AVAILABLE, ledger.USAGE, amount, category="storage",
                quantity=stored_bytes * seconds, unit="byte_s", price_version=sheet.version,
                memo=f"{stored_bytes:,} bytes for {seconds:,} s")
    return amount
