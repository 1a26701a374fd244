"""What a tenant sees of its money: the balance, each job's estimate next to its cost, usage per
day, the ledger's entries, and a CSV export of them."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.ledger import JobBilling, LedgerEntry
from ..db.models import utcnow
from . import ledger, prices
from .money import usd


def balance(session: Session, tenant_id: str) -> dict:
    acct = ledger.get_account(session, tenant_id)
    sheet = prices.current()
    return {"object": "billing.balance", "currency": "USD",
            "available": acct.available, "reserved": acct.reserved, "spent": acct.spent, "granted": acct.granted,
            "available_usd": usd(acct.available), "reserved_usd": usd(acct.reserved), "spent_usd": usd(acct.spent),
            "granted_usd": usd(acct.granted), "in_debt": acct.available < 0, "price_version": sheet.version,
            "units": "micro-dollars (1e-6 USD) unless the field ends in _usd"}


def job_out(jb: JobBilling, charges: list[LedgerEntry] | None = None) -> dict:
    est = jb.estimate or {}
    out = {"job_id": jb.job_id, "state": jb.state, "device": jb.device, "price_version": jb.price_version,
           "estimate": {"cost": jb.estimate_cost, "low": jb.estimate_low, "high": jb.estimate_high,
                        "cost_usd": usd(jb.estimate_cost), "low_usd": usd(jb.estimate_low),
                        "high_usd": usd(jb.estimate_high), "compute_seconds": round(est.get("compute_ms", 0) / 1000, 1),
                        "wall_seconds": est.get("wall_seconds"), "wall_low_seconds": est.get("wall_low_seconds"),
                        "wall_high_seconds": est.get("wall_high_seconds")},
           "reserved": jb.reserved, "reserved_usd": usd(jb.reserved), "charged": jb.charged, "charged_usd": usd(jb.charged),
           "compute_seconds": round(jb.billed_ms / 1000, 3), "metered_seconds": round(jb.metered_ms / 1000, 3),
           "actual": jb.actual or None, "settled_at": jb.settled_at.isoformat() if jb.settled_at else None}
    if charges is not None:
        out["charges"] = [entry_out(e) for e in charges]
    return out


def job_detail(session: Session, tenant_id: str, job_id: str) -> dict | None:
    jb = session.get(JobBilling, job_id)
    if jb is None or jb.tenant_id != tenant_id:
        return None
    entries = session.scalars(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.job_id == job_id)
                              .order_by(LedgerEntry.id)).all()
    return job_out(jb, entries)


def jobs(session: Session, tenant_id: str, limit: int = 100) -> list[dict]:
    rows = session.scalars(select(JobBilling).where(JobBilling.tenant_id == tenant_id)
                           .order_by(JobBilling.created_at.desc()).limit(limit)).all()
    return [job_out(jb) for jb in rows]


def entry_out(e: LedgerEntry) -> dict:
    return {"id": e.id, "kind": e.kind, "debit": e.debit, "credit": e.credit, "amount": e.amount,
            "amount_usd": usd(e.amount), "job_id": e.job_id, "category": e.category, "quantity": e.quantity,
            "unit": e.unit, "step_from": e.step_from, "step_to": e.step_to, "price_version": e.price_version,
            "reference": e.reference, "memo": e.memo, "expires_at": e.expires_at.isoformat() if e.expires_at else None,
            "created_at": e.created_at.isoformat()}


def entries(session: Session, tenant_id: str, after: int = 0, limit: int = 1000, job_id: str | None = None) -> list[LedgerEntry]:
    q = select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.id > after)
    if job_id:
        q = q.where(LedgerEntry.job_id == job_id)
    return session.scalars(q.order_by(LedgerEntry.id).limit(limit)).all()


def daily(session: Session, tenant_id: str, days: int = 30, now: datetime | None = None) -> list[dict]:
    """Charges per UTC day and category (compute, storage, serving), oldest first; days without
    usage included so a chart has no holes."""
    now = now or utcnow()
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = session.scalars(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.kind == "charge",
                                                     LedgerEntry.created_at >= start)).all()
    per_day: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    jobs_per_day: dict[str, set] = defaultdict(set)
    for e in rows:
        day = e.created_at.date().isoformat()
        per_day[day][e.category or "compute"] += e.amount
        if e.job_id:
            jobs_per_day[day].add(e.job_id)
    out = []
    for i in range(days):
        day = (start + timedelta(days=i)).date().isoformat()
        cats = per_day.get(day, {})
        total = sum(cats.values())
        out.append({"date": day, "total": total, "total_usd": usd(total), "jobs": len(jobs_per_day.get(day, ())),
                    **{f"{c}_usd": usd(cats.get(c, 0)) for c in ("compute", "storage", "serving")}})
    return out


CSV_FIELDS = ["id", "created_at", "kind", "category", "job_id", "debit", "credit", "amount", "amount_usd", "quantity",
              "unit", "step_from", "step_to", "price_version", "reference", "memo"]


def csv_export(session: Session, tenant_id: str) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    after = 0
    while True:
        page = entries(session, tenant_id, after=after, limit=5000)
        for e in page:
            writer.writerow(entry_out(e))
        if len(page) < 5000:
            return buf.getvalue()
        after = page[-1].id


def job_summary(jb: JobBilling) -> dict:
    """The short form embedded in the job object."""
    est = jb.estimate or {}
    return {"state": jb.state, "estimate_usd": usd(jb.estimate_cost),
            "estimate_range_usd": [usd(jb.estimate_low), usd(jb.estimate_high)],
            "estimate_wall_seconds": est.get("wall_seconds"),
            "estimate_wall_seconds_range": [est.get("wall_low_seconds"), est.get("wall_high_seconds")],
            "reserved_usd": usd(jb.reserved), "charged_usd": usd(jb.charged),
            "compute_seconds": round(jb.billed_ms / 1000, 3), "price_version": jb.price_version,
            "actual": jb.actual or None}
