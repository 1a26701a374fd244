"""Credits and usage. A tenant reads its balance, per-job cost (estimate next to actual), daily
usage, ledger entries (JSON or CSV), quotas and prices, and asks what a job would cost before
starting it (POST /api/v1/jobs/estimate). Operators (TUNELAB_OPERATOR_API_KEY, not a tenant's key)
grant credit and top-ups, correct balances, set quotas and reconcile the books."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ...billing import ledger, quotas, reports
from ...billing.money import to_micro, usd
from ...billing.prices import current as current_prices
from ...billing.quotas import QuotaExceeded
from ...billing.reconcile import reconcile
from ...billing.settlement import InsufficientCredit
from ...db.ledger import Calibration
from ...db.models import Job, Tenant
from ...jobs.spec import JobSpec, json_int
from ...services import billing as service
from ...services.jobs import JobRejected, check_spec
from ..deps import PrincipalDep, RowId, ScopeDep, SessionDep
from ...contract import (Adjustment, Balance, CalibrationTable, DailyUsage, Estimate, Grant, JobCost, JobCostList,
                         LedgerPage, PriceSheet, QuotaLimits, Quotas, Reconciliation)
from ..errors import AUTH, APIError, errors
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, tags=["billing"])
T = "/api/v1/billing"


def estimate_out(est) -> dict:
    return {"object": "billing.estimate", "device": est.device, "units": est.units, "price_version": est.price_version,
            "compute_seconds": round(est.compute_ms / 1000, 1),
            "compute_seconds_range": [round(est.compute_low_ms / 1000, 1), round(est.compute_high_ms / 1000, 1)],
            "wall_seconds": est.wall_seconds, "wall_seconds_range": [est.wall_low_seconds, est.wall_high_seconds],
            "cost": est.cost, "cost_low": est.cost_low, "cost_high": est.cost_high, "reserve": est.reserve,
            "cost_usd": usd(est.cost), "cost_range_usd": [usd(est.cost_low), usd(est.cost_high)],
            "reserve_usd": usd(est.reserve), "basis": est.basis}


@router.post("/api/v1/jobs/estimate", response_model=Estimate, responses=errors(*AUTH, 400, 404, 422))
def estimate_job(spec: JobSpec, scope: ScopeDep, session: SessionDep, principal: PrincipalDep):
    """What the job would cost and take, and whether it would start now (credit and quotas)."""
    try:
        spec = check_spec(scope, spec)
    except JobRejected as exc:
        raise APIError(404 if exc.code == "dataset_not_found" else 422, exc.code, str(exc), exc.param) from None
    est = service.estimate_spec(session, principal.tenant_id, spec)
    acct = ledger.get_account(session, principal.tenant_id)
    out = estimate_out(est) | {"available": acct.available, "available_usd": usd(acct.available),
                               "would_start": True, "missing": 0, "missing_usd": usd(0), "quota": None}
    try:
        quotas.check_job(session, principal.tenant_id, spec.model_dump(mode="json"))
    except QuotaExceeded as exc:
        out.update(would_start=False, quota=exc.to_dict() | {"message": str(exc)})
    if acct.available < est.reserve:
        short = InsufficientCredit(est.reserve, acct.available)
        out.update(would_start=False, missing=short.missing, missing_usd=usd(short.missing))
    return out


@router.get(f"{T}/balance", response_model=Balance, responses=errors(*AUTH))
def balance(principal: PrincipalDep, session: SessionDep):
    return reports.balance(session, principal.tenant_id)


@router.get(f"{T}/usage", response_model=DailyUsage, responses=errors(*AUTH, 422))
def daily_usage(principal: PrincipalDep, session: SessionDep, days: int = 30):
    days = max(1, min(days, 366))
    return {"object": "list", "days": days, "data": reports.daily(session, principal.tenant_id, days),
            "balance": reports.balance(session, principal.tenant_id)}


@router.get(f"{T}/jobs", response_model=JobCostList, responses=errors(*AUTH, 422))
def job_costs(principal: PrincipalDep, session: SessionDep, limit: int = 100):
    return {"object": "list", "data": reports.jobs(session, principal.tenant_id, max(1, min(limit, 1000)))}


@router.get(f"{T}/jobs/{{job_id}}", response_model=JobCost, responses=errors(*AUTH, 404))
def job_cost(job_id: str, scope: ScopeDep, session: SessionDep, principal: PrincipalDep):
    scope.get(Job, job_id, "job")
    detail = reports.job_detail(session, principal.tenant_id, job_id)
    if detail is None:
        raise APIError(404, "not_found", f"Job {job_id} has no billing record (it predates billing).")
    return detail


@router.get(f"{T}/entries", response_model=LedgerPage, responses=errors(*AUTH, 422))
def entries(principal: PrincipalDep, session: SessionDep, after: RowId = 0, limit: int = 1000, job_id: str | None = None):
    rows = reports.entries(session, principal.tenant_id, after, max(1, min(limit, 5000)), job_id)
    return {"object": "list", "data": [reports.entry_out(e) for e in rows], "last_id": rows[-1].id if rows else after}


@router.get(f"{T}/export.csv", response_class=Response, responses={
    200: {"description": "The tenant's whole ledger", "content": {"text/csv": {"schema": {"type": "string"}}}},
    **errors(*AUTH)})
def export_csv(principal: PrincipalDep, session: SessionDep):
    return Response(reports.csv_export(session, principal.tenant_id), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="tunelab-ledger.csv"'})


@router.get(f"{T}/quotas", response_model=Quotas, responses=errors(*AUTH))
def tenant_quotas(principal: PrincipalDep, session: SessionDep):
    return {"object": "billing.quotas", "limits": quotas.limits(session, principal.tenant_id),
            "usage": quotas.usage(session, principal.tenant_id), "defaults": quotas.defaults()}


@router.get(f"{T}/prices", response_model=PriceSheet, responses=errors(*AUTH))
def price_sheet(principal: PrincipalDep):
    return current_prices().to_dict()


# ---- operators -------------------------------------------------------------------------------
def operator(request: Request) -> str:
    """The platform operator's key (TUNELAB_OPERATOR_API_KEY): credit and quotas are not a tenant's to set.
    Guessing it is throttled like API keys, per client address: a blocked address gets 429 before its
    guess is compared (so it cannot tell a right one), and the comparison takes constant time."""
    expected = getattr(request.app.state.settings, "operator_api_key", None)
    if not expected:
        raise APIError(403, "operator_api_disabled", "The operator API is off: set TUNELAB_OPERATOR_API_KEY on the "
                                                     "server, or use `tunelab admin billing` on its machine.")
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    limiter, client = request.app.state.limits["failed_auth"], request.client.host if request.client else "?"
    wait = limiter.retry_after(client)
    if wait is None and _same(given, expected):
        return "operator"
    if wait is None and given:                    # a wrong key: counted against the address
        wait = limiter.hit(client)
    if wait is not None:
        raise APIError(429, "rate_limited", f"Too many failed attempts; retry in {wait:.0f} s.",
                       retry_after=round(wait, 1))
    raise APIError(403, "forbidden", "This needs the operator key (TUNELAB_OPERATOR_API_KEY).")


def _same(given: str, expected: str) -> bool:
    """Compared as digests: the time taken tells neither the value nor the length of the key."""
    return secrets.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


Operator = Depends(operator)
A = "/api/v1/admin/billing"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)     # as the document types it


class GrantBody(Body):
    tenant_id: str
    amount_usd: str | float = Field(description="dollars, e.g. \"25\" or \"0.50\"")
    kind: str = Field("topup", pattern="^(grant|topup)$")
    memo: str = Field("", max_length=500)
    reference: str | None = Field(None, max_length=200)
    expires_at: datetime | None = Field(None, strict=False)     # an ISO 8601 string in JSON


class AdjustBody(Body):
    tenant_id: str
    amount_usd: str | float
    memo: str = Field(min_length=1, max_length=500)


class QuotaBody(Body):
    tenant_id: str
    concurrent_jobs: json_int(ge=0) | None = None
    gpus: json_int(ge=0) | None = None
    storage_bytes: json_int(ge=0) | None = None
    dataset_bytes: json_int(ge=0) | None = None
    reset: list[str] = Field(default_factory=list, description="quotas to put back to the platform default")


def _tenant(session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise APIError(404, "not_found", f"No tenant with id {tenant_id!r}.", "tenant_id")
    return tenant


def _amount(value) -> int:
    try:
        return to_micro(value)
    except ValueError as exc:
        raise APIError(422, "invalid_amount", str(exc), "amount_usd") from None


# Operator routes take the operator key, not a tenant's: a wrong or missing one is 403 (never 401);
# an address that keeps guessing gets 429.
@router.post(f"{A}/grants", status_code=201, response_model=Grant, responses=errors(400, 403, 404, 422, 429))
def grant(body: GrantBody, session: SessionDep, who: str = Operator):
    _tenant(session, body.tenant_id)
    amount = _amount(body.amount_usd)
    if amount <= 0:
        raise APIError(422, "invalid_amount", "A grant or top-up is a positive amount.", "amount_usd")
    done = service.grant(session, body.tenant_id, amount, kind=body.kind, memo=body.memo, reference=body.reference,
                         expires_at=body.expires_at, created_by=who)
    return done | {"amount": amount, "amount_usd": usd(amount), "balance": reports.balance(session, body.tenant_id)}


@router.post(f"{A}/adjustments", status_code=201, response_model=Adjustment,
             responses=errors(400, 403, 404, 409, 422, 429))
def adjust(body: AdjustBody, session: SessionDep, who: str = Operator):
    _tenant(session, body.tenant_id)
    amount = _amount(body.amount_usd)
    try:
        entry = ledger.adjust(session, body.tenant_id, amount, memo=body.memo, created_by=who)
    except ledger.BillingError as exc:
        raise APIError(409, "invalid_adjustment", str(exc), "amount_usd") from None
    resumed = service.resume_paused(session, body.tenant_id) if amount > 0 else []
    return {"entry_id": entry.id if entry else None, "resumed_jobs": resumed,
            "balance": reports.balance(session, body.tenant_id)}


@router.put(f"{A}/quotas", response_model=QuotaLimits, responses=errors(400, 403, 404, 422, 429))
def set_quotas(body: QuotaBody, session: SessionDep, who: str = Operator):
    _tenant(session, body.tenant_id)
    changes = {q: getattr(body, q) for q in quotas.QUOTAS if getattr(body, q) is not None}
    changes |= {q: None for q in body.reset}          # unknown names are refused by set_limits
    try:
        limits = quotas.set_limits(session, body.tenant_id, changes, by=who)
    except ValueError as exc:
        raise APIError(422, "invalid_quota", str(exc), "reset") from None
    return {"tenant_id": body.tenant_id, "limits": limits}


@router.get(f"{A}/reconcile", response_model=Reconciliation, responses=errors(403, 429))
def reconcile_books(session: SessionDep, who: str = Operator):
    return reconcile(session)


@router.get(f"{A}/calibration", response_model=CalibrationTable, responses=errors(403, 429))
def calibration_table(session: SessionDep, who: str = Operator):
    rows = session.scalars(select(Calibration).order_by(Calibration.key)).all()
    return {"data": [{"key": r.key, "factor": r.factor, "wall_factor": r.wall_factor, "spread": r.spread,
                      "samples": r.samples, "updated_at": r.updated_at.isoformat()} for r in rows]}
