"""Billing for the API and the admin commands: a job's estimate from its spec, admission at
submission (quotas, then funds: the tenant's account row locked so concurrent submissions
reserve one after another and never overdraw), grants and top-ups (which resume paused jobs),
quotas on uploads."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..billing import ledger, quotas, settlement
from ..billing.estimate import Estimate, JobShape, bench_estimate, estimate
from ..billing.quotas import QuotaExceeded
from ..billing.settlement import InsufficientCredit
from ..db.ledger import JobBilling
from ..db.models import Dataset, Job
from ..jobs.metering import resume_paused
from ..jobs.spec import JobSpec
from ..jobs.status import JobStatus
from ..models import resolve_model
from ..models.catalog import catalog_spec
from ..strategies import get_strategy, parse_params

__all__ = ["InsufficientCredit", "QuotaExceeded", "admit", "estimate_spec", "grant", "open_reservation"]


# An image, in the estimator's units (tokens through a model of the same parameter count): its
# forward FLOPs / (2 x parameters). EfficientNet-Lite0 at 224 px: 0.39 GFLOPs / (2 x 4.7 M) = 42;
# ResNet-20 at 32 px: 41 MFLOPs / (2 x 0.27 M) = 76. Metered jobs calibrate the rest (`observe`).
IMAGE_TOKENS = 64.0


def _is_images(ds: Dataset) -> bool:
    return (ds.report or {}).get("kind") == "images"


def _mean_tokens(ds: Dataset) -> float:
    if _is_images(ds):
        return IMAGE_TOKENS
    length = (ds.stats or {}).get("length") or {}
    mean = float(length.get("mean") or 0.0)
    if (ds.stats or {}).get("length_unit") == "words":
        mean *= 1.35        # roughly tokens per word for English text with a WordPiece vocabulary
    return mean or 16.0


def _histogram(ds: Dataset) -> dict | None:
    """The token-length histogram, converted from words when the stats counted words."""
    hist = (ds.stats or {}).get("histogram")
    if _is_images(ds) or not isinstance(hist, dict) or not hist.get("bins"):
        return None
    if (ds.stats or {}).get("length_unit") == "words":
        hist = {"bins": [b * 1.35 for b in hist["bins"]], "counts": hist["counts"]}
    return hist


def model_parameters(tenant_id: str, model: str) -> int:
    """The base model's size: from the catalog, or from an uploaded model's folder."""
    try:
        if model.startswith("upload:"):
            from ..settings import get_settings
            from .uploaded_models import find_model

            folder = find_model(get_settings().home, tenant_id, model)
            return resolve_model(str(folder)).parameters or 110_000_000
        spec = catalog_spec(model)         # declared in the catalog: no weights imported for an estimate
        return (spec.parameters if spec is not None else None) or resolve_model(model).parameters or 110_000_000
    except (LookupError, ValueError, OSError, TypeError):
        return 110_000_000        # BERT-base sized: the usual uploaded encoder


def shapes(session: Session, tenant_id: str, spec: JobSpec) -> list[JobShape]:
    """One JobShape per strategy the job runs (the spec was checked by services.jobs.check_spec)."""
    train = session.get(Dataset, spec.dataset_id)
    test = session.get(Dataset, spec.test_dataset_id) if spec.test_dataset_id else None
    if train is None or train.tenant_id != tenant_id:
        raise LookupError(f"No dataset with id {spec.dataset_id!r}.")
    params_count = model_parameters(tenant_id, spec.model)
    rows = min(spec.limit or train.rows, train.rows)
    labels = int((train.stats or {}).get("num_labels") or 2)
    names = spec.strategies if spec.kind == "compare" else [spec.strategy]
    cached = cached_features(session, tenant_id, spec)
    out = []
    for name in names:
        strategy = get_strategy(name)
        overrides = spec.params if spec.kind == "train" else spec.strategy_params.get(name)
        params = parse_params(strategy, overrides).model_dump()
        out.append(JobShape(strategy=name, model=spec.model, model_params=params_count,
                            rows=rows, test_rows=test.rows if test is not None else None,
                            mean_tokens=_mean_tokens(train), labels=labels, params=params,
                            family=getattr(strategy, "family", "fine-tune"), file_rows=train.rows,
                            length_histogram=_histogram(train), max_length=_max_length(spec.model),
                            cached=frozenset(cached)))
        cached |= strategy.caches     # a compare job's later strategies find them
    return out


def cached_features(session: Session, tenant_id: str, spec: JobSpec) -> set[str]:
    """Splits whose features earlier succeeded jobs on the same split (dataset, test file, limit,
    seed, model) cached: those are not encoded again, so not estimated again."""
    same = ("dataset_id", "test_dataset_id", "limit", "seed", "model")
    want = spec.model_dump(mode="json")
    found: set[str] = set()
    jobs = session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.status == JobStatus.SUCCEEDED)
                           .order_by(Job.created_at.desc()).limit(200))
    for job in jobs:
        done = job.spec or {}
        if all(done.get(k) == want.get(k) for k in same):
            for name in (done.get("strategies") or [done.get("strategy")]):
                found |= _caches(name)
    return found


def _max_length(model: str) -> int:
    try:
        if model.startswith("upload:"):
            return 512
        spec = catalog_spec(model) or resolve_model(model)
        return int(spec.max_length or 512)
    except (LookupError, ValueError, OSError, TypeError):
        return 512


def estimate_spec(session: Session, tenant_id: str, spec: JobSpec) -> Estimate:
    """What the job will cost: per strategy run from its dataset (capped by a comparison's budget);
    a hardware benchmark from its mode (billing/work.json `bench-hardware`)."""
    if spec.is_bench:
        return bench_estimate(session, quick=spec.quick, sweep=spec.sweep)
    if spec.is_batch:
        from .batch_predictions import estimate as batch_estimate

        return batch_estimate(session, tenant_id, spec)
    return within_budget(estimate(session, shapes(session, tenant_id, spec)), spec)


def within_budget(est: Estimate, spec: JobSpec) -> Estimate:
    """A compare job with a budget stops when it is spent: its cost (and so its reservation, the
    top of the range) is at most the budget's. Seconds are priced as the estimate's device and
    units for that long; a job that still outruns it draws more as it goes (billing.metering)."""
    if spec.kind != "compare" or (spec.budget_seconds is None and spec.budget_usd is None):
        return est
    from dataclasses import replace

    from ..billing import prices

    caps = []
    if spec.budget_usd is not None:
        caps.append(int(round(spec.budget_usd * 1_000_000)))
    if spec.budget_seconds is not None:
        per_hour = prices.current().compute_per_hour(est.device)
        caps.append(prices.compute_cost(int(spec.budget_seconds * 1000 * est.units), per_hour))
    cap = max(min(caps), 1)
    if est.cost_high <= cap:
        return est
    return replace(est, cost=min(est.cost, cap), cost_low=min(est.cost_low, cap), cost_high=cap)


def admit(session: Session, tenant_id: str, spec: JobSpec) -> Estimate:
    """Estimate, then with the tenant's account locked: quotas, then funds. Raises QuotaExceeded
    or InsufficientCredit; on success the caller creates the job and calls open_reservation in
    the same transaction (the lock is held until it commits)."""
    est = estimate_spec(session, tenant_id, spec)
    acct = ledger.lock_account(session, tenant_id)
    quotas.check_job(session, tenant_id, spec.model_dump(mode="json"))
    settlement.check_funds(acct, est)
    return est


def open_reservation(session: Session, job: Job, est: Estimate) -> JobBilling:
    acct = ledger.lock_account(session, job.tenant_id)
    return settlement.open_job(session, acct, job.id, est)


def grant(session: Session, tenant_id: str, amount: int, *, kind: str = "grant", memo: str = "",
          expires_at=None, reference: str | None = None, created_by: str | None = None) -> dict:
    """Credit in (an operator's grant or a top-up); paused jobs the credit now covers are requeued."""
    entry = ledger.grant(session, tenant_id, amount, kind=kind, memo=memo, expires_at=expires_at,
                         reference=reference, created_by=created_by)
    resumed = resume_paused(session, tenant_id)
    return {"entry_id": entry.id, "resumed_jobs": resumed}


def check_upload(session: Session, tenant_id: str, size: int) -> None:
    quotas.check_upload(session, tenant_id, size)


def _caches(name: str | None) -> frozenset:
    """What a finished run of `name` left in the tenant's feature cache (models.embeddings)."""
    from ..strategies import ConfigError, get_strategy

    try:
        return get_strategy(name or "").caches
    except ConfigError:           # a strategy since removed
        return frozenset()
