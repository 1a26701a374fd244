"""Credits in the UI, from the billing layer: what a run would cost and take before it starts
(the same estimate the API reserves against), the balance, spend per day and per job.

Every call degrades to None: a page never fails because billing could not answer."""

from __future__ import annotations

import logging

from ..billing.money import usd
from ..jobs.spec import JobSpec
from .format import Money

log = logging.getLogger("tunelab.web")


def _estimate(session, tenant_id: str, spec: JobSpec) -> dict | None:
    from ..services.billing import estimate_spec

    try:
        est = estimate_spec(session, tenant_id, spec)
    except Exception:       # billing must never take a page down with it
        log.warning("estimate failed", exc_info=True)
        return None
    return {"seconds": est.wall_seconds, "low": est.wall_low_seconds, "high": est.wall_high_seconds,
            "cost": Money(usd(est.cost)), "cost_low": Money(usd(est.cost_low)), "cost_high": Money(usd(est.cost_high)),
            "reserve": Money(usd(est.reserve)), "device": est.device}


def per_strategy(session, tenant_id: str, dataset_id: str, model: str, limit: int | None,
                 strategies: list[str]) -> dict[str, dict]:
    """Each strategy's estimate with its default hyperparameters (the wizard's cards)."""
    out = {}
    for name in strategies:
        est = _estimate(session, tenant_id, JobSpec(dataset_id=dataset_id, model=model, strategy=name, limit=limit))
        if est is not None:
            out[name] = est
    return out


def panel(session, scope, principal, spec: JobSpec) -> dict | None:
    """The API's own answer to `POST /api/v1/jobs/estimate`: cost, time, and whether it would start."""
    from ..api.errors import APIError
    from ..api.routes.billing import estimate_job

    try:
        out = estimate_job(spec, scope, session, principal)
    except APIError as exc:
        return {"error": exc.message}
    except Exception:
        log.warning("estimate failed", exc_info=True)
        return None
    quota = out.get("quota") or {}
    return {"cost": _money(out["cost_usd"]), "cost_low": _money(out["cost_range_usd"][0]),
            "cost_high": _money(out["cost_range_usd"][1]), "reserve": _money(out["reserve_usd"]),
            "seconds": out["wall_seconds"], "low": out["wall_seconds_range"][0], "high": out["wall_seconds_range"][1],
            "available": _money(out["available_usd"]), "would_start": out["would_start"],
            "missing": _money(out["missing_usd"]) if out.get("missing") else None, "quota": quota.get("message")}


def _money(text: str) -> Money:
    """The ledger's exact dollars ("99.999344") as people read them ("$100.00"), the exact figure
    kept for hover (`.exact`): one rounding rule for every page (web/format.money)."""
    return Money(text)


def account(session, tenant_id: str, days: int = 30) -> dict | None:
    from ..billing import reports

    try:
        balance = reports.balance(session, tenant_id)
        daily = reports.daily(session, tenant_id, days)
        jobs = reports.jobs(session, tenant_id, 50)
    except Exception:
        log.warning("billing reports failed", exc_info=True)
        return None
    peak = max((float(d["total_usd"]) for d in daily), default=0) or 1
    return {"balance": {k: _money(balance[f"{k}_usd"]) for k in ("available", "reserved", "spent", "granted")},
            "in_debt": balance.get("in_debt"), "price_version": balance.get("price_version"),
            "daily": [d | {"pct": round(100 * float(d["total_usd"]) / peak, 1), "money": _money(d["total_usd"])}
                      for d in daily],
            "jobs": [j | {"estimate_money": _money(j["estimate"]["cost_usd"]), "charged_money": _money(j["charged_usd"])}
                     for j in jobs]}


def job_cost(session, tenant_id: str, job_id: str) -> dict | None:
    from ..billing import reports

    try:
        detail = reports.job_detail(session, tenant_id, job_id)
    except Exception:
        log.warning("job cost failed", exc_info=True)
        return None
    if detail is None:
        return None
    est = detail["estimate"]
    # a settled charge under the quote's low end is explained on the page (stopped early, cached work)
    below = detail["state"] == "settled" and int(detail.get("charged") or 0) < int(est.get("low") or 0)
    return {"state": detail["state"], "below_range": below, "estimate": _money(est["cost_usd"]), "low": _money(est["low_usd"]),
            "high": _money(est["high_usd"]), "charged": _money(detail["charged_usd"]),
            "reserved": _money(detail["reserved_usd"]), "compute_seconds": detail["compute_seconds"],
            "wall_estimate": est.get("wall_seconds")}


def compute_money(seconds: float | None) -> Money | None:
    """Compute seconds of this machine in dollars at the current price sheet (a comparison's
    "training + serving" cost): the device and units jobs are billed for here."""
    from ..billing import prices
    from ..billing.devices import detect

    if seconds is None:
        return None
    try:
        device, units = detect()
        per_hour = prices.current().compute_per_hour(device) * (units if device == "cpu" else 1)
    except Exception:
        log.warning("price lookup failed", exc_info=True)
        return None
    return Money(usd(prices.compute_cost(int(float(seconds) * 1000), per_hour)))
