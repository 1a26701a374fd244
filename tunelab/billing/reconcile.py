"""Proof that the books balance (`tunelab admin billing reconcile`): for every tenant, the cached
balances equal the sums of the ledger's entries, available + reserved + usage + expired equals
what was granted, each job's cached reservation and charges equal its entries, the open
reservations add up to the tenant's `reserved`, and no job was charged twice for a step range."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.ledger import BillingAccount, JobBilling, LedgerEntry
from . import ledger, prices
from .money import usd


def reconcile_tenant(session: Session, tenant_id: str) -> dict:
    problems: list[str] = []
    acct = session.scalars(select(BillingAccount).where(BillingAccount.tenant_id == tenant_id)).first()
    sums = ledger.sums(session, tenant_id)
    if acct is None:
        return {"tenant_id": tenant_id, "ok": not any(sums.values()), "problems": ["no account"] if any(sums.values())
                else [], "balances": sums}
    cached = {"available": acct.available, "reserved": acct.reserved, "usage": acct.spent, "funding": -acct.granted}
    for account, value in cached.items():
        if sums[account] != value:
            problems.append(f"{account}: cached {value} != entries {sums[account]}")
    if sum(sums.values()) != 0:
        problems.append(f"entries do not sum to zero: {sum(sums.values())}")
    entries = session.scalars(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.job_id.isnot(None))
                              .order_by(LedgerEntry.id)).all()
    by_job: dict[str, list[LedgerEntry]] = defaultdict(list)
    for e in entries:
        by_job[e.job_id].append(e)
    jobs = {jb.job_id: jb for jb in session.scalars(select(JobBilling).where(JobBilling.tenant_id == tenant_id))}
    open_total, double_billed = 0, []
    for job_id in set(by_job) | set(jobs):
        es, jb = by_job.get(job_id, []), jobs.get(job_id)
        held = sum(e.amount if e.credit == ledger.RESERVED else -e.amount if e.debit == ledger.RESERVED else 0
                   for e in es)
        charged = sum(e.amount for e in es if e.kind == "charge")
        billed = sum(e.quantity or 0 for e in es if e.kind == "charge")
        if jb is None:
            problems.append(f"job {job_id}: entries but no billing row")
            continue
        if held != jb.reserved:
            problems.append(f"job {job_id}: reservation cached {jb.reserved} != entries {held}")
        if charged != jb.charged:
            problems.append(f"job {job_id}: charged cached {jb.charged} != entries {charged}")
        # Readings worth less than a micro-dollar post no entry; together they stay under one.
        unposted = jb.billed_ms - billed
        if unposted < 0 or unposted * prices.current().compute_per_hour(jb.device) >= prices.MS_PER_HOUR:
            problems.append(f"job {job_id}: billed compute cached {jb.billed_ms} ms != entries {billed} ms")
        if jb.state == "settled" and jb.reserved:
            problems.append(f"job {job_id}: settled but still holds {jb.reserved}")
        open_total += jb.reserved
        frontier = None
        for e in (e for e in es if e.kind == "charge" and e.step_from is not None):
            if frontier is not None and e.step_from < frontier:
                double_billed.append({"job_id": job_id, "entry": e.id, "range": [e.step_from, e.step_to],
                                      "already_billed_to": frontier})
            frontier = max(frontier if frontier is not None else e.step_to, e.step_to)
    if open_total != acct.reserved:
        problems.append(f"reserved {acct.reserved} != sum of the jobs' reservations {open_total}")
    for d in double_billed:
        problems.append(f"job {d['job_id']}: steps ({d['range'][0]}, {d['range'][1]}] billed again "
                        f"(already billed to {d['already_billed_to']})")
    return {"tenant_id": tenant_id, "ok": not problems, "problems": problems,
            "balances": {k: v for k, v in sums.items()},
            "balances_usd": {k: usd(v) for k, v in sums.items()},
            "granted": acct.granted, "in_debt": acct.available < 0, "jobs": len(jobs), "entries": len(entries),
            "identity": f"available {usd(sums['available'])} + reserved {usd(sums['reserved'])} + usage "
                        f"{usd(sums['usage'])} + expired {usd(sums['expired'])} = granted {usd(-sums['funding'])}"}


def reconcile(session: Session, tenant_ids: list[str] | None = None) -> dict:
    if tenant_ids is None:
        found = set(session.scalars(select(BillingAccount.tenant_id)).all())
        found |= set(session.scalars(select(LedgerEntry.tenant_id).distinct()).all())
        tenant_ids = sorted(found)
    tenants = [reconcile_tenant(session, t) for t in tenant_ids]
    return {"ok": all(t["ok"] for t in tenants), "tenants": tenants}
