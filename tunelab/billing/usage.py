"""Usage that is not a job: bytes stored (per GB-day, accrued between housekeeping passes) and
requests served (per 1K requests, and per 1K tokens for generative deployments: counted atomically
per request, charged in batches)."""

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
    """402: the available credit does not cover the requests (and generated tokens) served and not
    yet billed plus this request's (or there is none at all)."""

    def __init__(self, needed: int, available: int):
        super().__init__(needed, available)
        sheet = prices.current()
        self.args = (f"Insufficient credit: serving costs {usd(sheet.per_1k_requests)} USD per 1,000 requests "
                     f"(and {usd(sheet.per_1k_tokens)} USD per 1,000 tokens generated) and "
                     f"{usd(max(available, 0))} USD is available for {usd(needed)} USD owed with this request. "
                     "Top up to go on serving.",)


def check_served(session: Session, tenant_id: str, requests: int, tokens: int = 0) -> None:
    """Before serving, a cheap read: refuse (NoCreditForServing) when the credit is gone already,
    rather than spend the compute on an answer that will not be given."""
    acct = ledger.get_account(session, tenant_id)
    _refuse_unless_covered(acct, requests, tokens)


def count_served(session: Session, tenant_id: str, requests: int, tokens: int = 0) -> None:
    """After serving, one atomic conditional increment, no lock (the request path stays cheap;
    `bill_serving` charges later): counted only while the available credit, above zero, still
    covers every request and token served and not billed, this one's included. A concurrent
    request that took the last of it leaves this one uncounted and refused (NoCreditForServing):
    the balance never goes below zero through serving."""
    if requests <= 0 and tokens <= 0:
        return
    acct = ledger.get_account(session, tenant_id)
    sheet = prices.current()
    owed = (BillingAccount.served_requests + requests - BillingAccount.served_billed_requests) * sheet.per_1k_requests \
        + (BillingAccount.served_tokens + tokens - BillingAccount.served_billed_tokens) * sheet.per_1k_tokens
    done = session.execute(update(BillingAccount).where(
        BillingAccount.tenant_id == tenant_id, BillingAccount.available > 0, owed <= BillingAccount.available * 1000)
        .values(served_requests=BillingAccount.served_requests + max(requests, 0),
                served_tokens=BillingAccount.served_tokens + max(tokens, 0))
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        session.refresh(acct)
        raise NoCreditForServing(unbilled_serving(acct, requests, tokens), acct.available)


def _refuse_unless_covered(acct: BillingAccount, requests: int, tokens: int = 0) -> None:
    needed = unbilled_serving(acct, requests, tokens)
    if acct.available <= 0 or needed > acct.available:
        raise NoCreditForServing(needed, acct.available)


def bill_serving(session: Session, tenant_id: str) -> int:
    """Charge the requests and the generated tokens served since the last pass (each its own entry)."""
    acct = ledger.lock_account(session, tenant_id)
    sheet = prices.current()
    charged = 0
    new = acct.served_requests - acct.served_billed_requests
    amount = acct.served_requests * sheet.per_1k_requests // 1000 - acct.served_billed_requests * sheet.per_1k_requests // 1000
    if new > 0 and amount > 0:
        ledger.post(session, acct, "charge", ledger.AVAILABLE, ledger.USAGE, amount, category="serving", quantity=new,
                    unit="requests", price_version=sheet.version, memo=f"{new} predictions served")
        acct.served_billed_requests = acct.served_requests
        charged += amount
    served, billed = acct.served_tokens or 0, acct.served_billed_tokens or 0
    tokens = served - billed
    amount = served * sheet.per_1k_tokens // 1000 - billed * sheet.per_1k_tokens // 1000
    if tokens > 0 and amount > 0:
        ledger.post(session, acct, "charge", ledger.AVAILABLE, ledger.USAGE, amount, category="serving",
                    quantity=tokens, unit="tokens", price_version=sheet.version, memo=f"{tokens} tokens generated")
        acct.served_billed_tokens = served
        charged += amount
    return charged


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
