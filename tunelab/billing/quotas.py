"""Per-tenant quotas: concurrent jobs, GPUs in use, storage bytes, and the size of one dataset.
Operators set them (`tunelab admin billing quota`, or the operator API); unset means the platform
default below (TUNELAB_QUOTA_<NAME> overrides a default). Hitting one is a `QuotaExceeded` that
names the quota, its limit and what the request would have made of it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.ledger import TenantQuota
from ..db.models import Dataset, Job, utcnow
from ..settings import get_settings

QUOTAS = ("concurrent_jobs", "gpus", "storage_bytes", "dataset_bytes")
DEFAULTS = {"concurrent_jobs": 8, "gpus": 1, "storage_bytes": 10 * 10**9, "dataset_bytes": 500 * 10**6}
ACTIVE = ("queued", "validating", "running")
_WHAT = {"concurrent_jobs": "jobs queued or running at once", "gpus": "GPUs in use at once",
         "storage_bytes": "bytes stored (datasets, uploaded and tuned models, job files)",
         "dataset_bytes": "bytes in one dataset"}


class QuotaExceeded(Exception):
    def __init__(self, quota: str, limit: int, current: int, requested: int):
        self.quota, self.limit, self.current, self.requested = quota, limit, current, requested
        unit = " bytes" if quota.endswith("_bytes") else ""
        super().__init__(f"Quota {quota} exceeded: {_WHAT[quota]} is limited to {limit:,}{unit}; this request "
                         f"would make it {current + requested:,}{unit} (now {current:,}). "
                         "Ask your operator to raise it, or free some first.")

    def to_dict(self) -> dict:
        return {"quota": self.quota, "limit": self.limit, "current": self.current, "requested": self.requested}


def defaults() -> dict[str, int]:
    return {q: int(os.environ.get(f"TUNELAB_QUOTA_{q.upper()}", DEFAULTS[q])) for q in QUOTAS}


def limits(session: Session, tenant_id: str) -> dict[str, int]:
    row = session.scalars(select(TenantQuota).where(TenantQuota.tenant_id == tenant_id)).first()
    base = defaults()
    return {q: (getattr(row, q) if row is not None and getattr(row, q) is not None else base[q]) for q in QUOTAS}


def set_limits(session: Session, tenant_id: str, changes: dict[str, int | None], by: str | None = None) -> dict:
    """None resets a quota to the platform default."""
    unknown = set(changes) - set(QUOTAS)
    if unknown:
        raise ValueError(f"unknown quota(s): {', '.join(sorted(unknown))}; known: {', '.join(QUOTAS)}")
    for name, value in changes.items():
        if value is not None and int(value) < 0:
            raise ValueError(f"quota {name} must be >= 0")
    row = session.scalars(select(TenantQuota).where(TenantQuota.tenant_id == tenant_id)).first()
    if row is None:
        row = TenantQuota(tenant_id=tenant_id)
        session.add(row)
    for name, value in changes.items():
        setattr(row, name, None if value is None else int(value))
    row.updated_at, row.updated_by = utcnow(), by
    session.flush()
    return limits(session, tenant_id)


def usage(session: Session, tenant_id: str, home: Path | None = None) -> dict[str, int]:
    jobs = session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))).all()
    largest = session.scalar(select(func.coalesce(func.max(Dataset.bytes), 0)).where(Dataset.tenant_id == tenant_id))
    # GPUs in use: the jobs a worker holds (as placed); a queued job waits for its GPUs instead
    in_use = [j for j in jobs if j.lease_owner is not None]
    return {"concurrent_jobs": len(jobs), "gpus": sum(_held_gpus(j) for j in in_use),
            "storage_bytes": stored_bytes(home or get_settings().home, tenant_id),
            "dataset_bytes": int(largest or 0)}


def stored_bytes(home: Path, tenant_id: str) -> int:
    """What the tenant's files take on disk, counted where they are rather than from its rows, so
    nothing is missed: encrypted datasets (until their blob goes), uploaded base models, and
    everything under its jobs' folders (sealed tuned models, checkpoints, logs). Its data key and
    the feature cache the platform keeps for its jobs are not counted."""
    root = Path(home) / "tenants" / tenant_id
    return sum(folder_bytes(p) for p in (root / "datasets", root / "models", Path(home) / "jobs" / tenant_id))


def gpus_of(spec: dict, device: str | None = None) -> int:
    """GPUs a job holds while it runs: one a process on a GPU worker (QLoRA always needs them),
    none on CPU."""
    from .devices import detect

    device = device or detect()[0]
    processes = max(1, int(spec.get("processes") or 1))
    return processes if device.startswith("gpu") or _needs_cuda(spec.get("strategy")) else 0


def _held_gpus(job: Job) -> int:
    """As the worker placed it (a list of GPUs; a cluster executor's count), else as its spec asks."""
    placed = (job.placement or {}).get("gpus") if isinstance(job.placement, dict) else None
    if isinstance(placed, list):
        return len(placed)
    if isinstance(placed, int) and not isinstance(placed, bool):
        return placed
    return gpus_of(job.spec or {})


def _needs_cuda(name: str | None) -> bool:
    from ..strategies import ConfigError, get_strategy

    try:
        return bool(name) and get_strategy(name).needs_cuda
    except ConfigError:
        return False


def folder_bytes(path: str | Path) -> int:
    """Bytes of the regular files in a folder (or of one file: a sealed model is one), links not
    followed."""
    try:
        if os.path.isfile(path) and not os.path.islink(path):
            return os.path.getsize(path)
    except OSError:
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def check_job(session: Session, tenant_id: str, spec: dict) -> None:
    """Before a job is queued (call with the tenant's account locked, so that two concurrent
    submissions cannot both take the last slot). The gpus quota is kept by the queue instead."""
    lim = limits(session, tenant_id)
    jobs = session.scalars(select(Job.spec).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))).all()
    if len(jobs) + 1 > lim["concurrent_jobs"]:
        raise QuotaExceeded("concurrent_jobs", lim["concurrent_jobs"], len(jobs), 1)
    # Over the gpus quota a job is admitted and waits in the queue for the tenant's GPUs to come
    # free (jobs/scheduling.py says so on the job); refused only when it alone needs more.
    need = gpus_of(spec)
    if need > lim["gpus"]:
        raise QuotaExceeded("gpus", lim["gpus"], 0, need)


def check_upload(session: Session, tenant_id: str, size: int) -> None:
    """Before a dataset of `size` bytes is stored."""
    lim = limits(session, tenant_id)
    if size > lim["dataset_bytes"]:
        raise QuotaExceeded("dataset_bytes", lim["dataset_bytes"], 0, size)
    stored = usage(session, tenant_id)["storage_bytes"]
    if stored + size > lim["storage_bytes"]:
        raise QuotaExceeded("storage_bytes", lim["storage_bytes"], stored, size)
