"""A job's money from start to end: reserve the top of its estimate when it is queued; release
what is left when it pauses (re-reserved when a top-up resumes it); settle when it ends: release
the rest, store the estimate next to the actual, and teach the calibration table."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..db.ledger import BillingAccount, JobBilling
from ..db.models import utcnow
from . import estimate as estimating
from . import ledger, prices
from .money import usd


class InsufficientCredit(Exception):
    def __init__(self, needed: int, available: int):
        self.needed, self.available, self.missing = needed, available, needed - max(available, 0)
        super().__init__(f"Insufficient credit: this job reserves {usd(needed)} USD (the top of its estimate) but "
                         f"{usd(max(available, 0))} USD is available; {usd(self.missing)} USD is missing. "
                         "Top up, or make the job smaller (fewer epochs, a `limit`, a cheaper strategy).")

    def to_dict(self) -> dict:
        return {"needed": self.needed, "available": self.available, "missing": self.missing,
                "needed_usd": usd(self.needed), "available_usd": usd(max(self.available, 0)),
                "missing_usd": usd(self.missing)}


def check_funds(acct: BillingAccount, est: estimating.Estimate) -> None:
    # Predictions served but not yet billed are already owed: a job may not reserve them away.
    available = acct.available - unbilled_serving(acct)
    if available < est.reserve:
        raise InsufficientCredit(est.reserve, available)


def unbilled_serving(acct: BillingAccount, more: int = 0, tokens: int = 0) -> int:
    """What the requests and generated tokens served and not yet billed (plus `more` requests and
    `tokens` tokens) will cost, rounded up."""
    sheet = prices.current()
    owed = (acct.served_requests + more - acct.served_billed_requests) * sheet.per_1k_requests
    owed_tokens = ((acct.served_tokens or 0) + tokens - (acct.served_billed_tokens or 0)) * sheet.per_1k_tokens
    return -(-owed // 1000) - (-owed_tokens // 1000)


def open_job(session: Session, acct: BillingAccount, job_id: str, est: estimating.Estimate) -> JobBilling:
    """With the account locked and the funds checked: the job's billing row and its reservation."""
    jb = JobBilling(tenant_id=acct.tenant_id, job_id=job_id, device=est.device, price_version=est.price_version,
                    estimate=est.to_dict(), estimate_cost=est.cost, estimate_low=est.cost_low,
                    estimate_high=est.cost_high)
    session.add(jb)
    session.flush()
    ledger.reserve(session, acct, jb, est.reserve, memo="reserved at submission: the top of the estimate")
    return jb


def pause(session: Session, tenant_id: str, job_id: str) -> JobBilling | None:
    if session.get(JobBilling, job_id) is None:      # a job from before billing: nothing held
        return None
    acct = ledger.lock_account(session, tenant_id)
    jb = ledger.job_billing(session, job_id)
    if jb is None or jb.state != "open":
        return jb
    ledger.release(session, acct, jb, memo="job paused: reservation released")
    jb.state = "paused"
    return jb


RESUME_SECONDS = 60


def resume_amount(jb: JobBilling) -> int:
    """What a paused job must hold again to go on: the rest of its estimate, at least a quarter of
    it (it already outran the estimate once), and at least a minute at the rate it was spending
    (so that the credit left over when it paused does not restart it only to pause it again)."""
    rate = jb.charged * 1000 // jb.wall_ms if jb.wall_ms > 0 else 0      # micro-dollars per second
    return max(jb.estimate_high - jb.charged, jb.estimate_high // 4, rate * RESUME_SECONDS, 1)


def try_resume(session: Session, acct: BillingAccount, jb: JobBilling) -> bool:
    """With the account locked: re-reserve for a paused job if the credit is there."""
    need = resume_amount(jb)
    if jb.state != "paused" or acct.available < need:
        return False
    ledger.reserve(session, acct, jb, need, memo="reserved again: the job resumes after a top-up")
    jb.state = "open"
    return True


def settle(session: Session, tenant_id: str, job_id: str, *, outcome: str, attempts: int, kind: str = "train",
           strategy: str | None = None, model: str | None = None, tokens_trained: int | None = None) -> JobBilling | None:
    """Release the rest of the reservation and record the actual next to the estimate."""
    if session.get(JobBilling, job_id) is None:
        return None
    acct = ledger.lock_account(session, tenant_id)
    jb = ledger.job_billing(session, job_id)
    if jb is None or jb.state == "settled":
        return jb
    released = ledger.release(session, acct, jb, memo=f"job {outcome}: the rest of the reservation released")
    est = jb.estimate or {}
    jb.actual = {
        "outcome": outcome, "attempts": attempts, "cost": jb.charged, "cost_usd": usd(jb.charged),
        "estimate": jb.estimate_cost, "estimate_usd": usd(jb.estimate_cost),
        "range_usd": [usd(jb.estimate_low), usd(jb.estimate_high)],
        "error": _error(jb.charged, jb.estimate_cost),
        "within_range": jb.estimate_low <= jb.charged <= jb.estimate_high,
        "compute_ms": jb.billed_ms, "metered_ms": jb.metered_ms, "not_charged_ms": jb.metered_ms - jb.billed_ms,
        "estimated_compute_ms": est.get("compute_ms"), "compute_error": _error(jb.billed_ms, est.get("compute_ms")),
        "wall_seconds": round(jb.wall_ms / 1000, 1), "estimated_wall_seconds": est.get("wall_seconds"),
        "released": released,
    }
    jb.state, jb.settled_at = "settled", utcnow()
    clean = jb.billed_ms == jb.metered_ms and attempts == 1
    if outcome == "succeeded" and kind == "train" and clean and strategy and model and est.get("raw_ms"):
        key = estimating.calibration_key(strategy, model, jb.device)
        estimating.observe(session, key, estimating.work_done_raw(est, tokens_trained), jb.billed_ms, jb.wall_ms,
                           int(est.get("units") or 1), jb.device, estimated_ms=est.get("compute_ms"))
    return jb


def _error(actual, estimated) -> float | None:
    if not estimated:
        return None
    return round((actual - estimated) / estimated, 4)
