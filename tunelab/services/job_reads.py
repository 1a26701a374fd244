"""The reads clients poll: one job as its status GET shows it, and the job events and statuses the
stream poller fans out.

Polled by every SDK, UI tab and stream, so built for cost: SQLAlchemy Core statements built once,
run on a plain connection (the ORM's per-query bookkeeping was several times the query itself). The
tenant wall is the same as `db.scoped.TenantScope`'s: every statement that takes a caller's id
filters on the caller's tenant, so another tenant's job reads as missing.
"""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from ..db.ledger import JobBilling
from ..db.models import Job, JobEvent
from . import job_resume

_JOBS, _BILLING = Job.__table__, JobBilling.__table__
_JOB_KEYS, _BILLING_KEYS = [c.name for c in _JOBS.c], [c.name for c in _BILLING.c]

# The job and its billing row side by side (an outer join: one round trip, where the ORM's
# `selectin` made two).
_VIEW = (select(*_JOBS.c, *_BILLING.c)
         .outerjoin(_BILLING, _BILLING.c.job_id == _JOBS.c.id)
         .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.tenant_id == bindparam("tenant_id")))
_STATUS = select(_JOBS.c.status).where(_JOBS.c.id == bindparam("job_id"),
                                       _JOBS.c.tenant_id == bindparam("tenant_id"))
_STATUSES = select(_JOBS.c.id, _JOBS.c.status).where(_JOBS.c.id.in_(bindparam("job_ids", expanding=True)))
_EVENTS = (select(JobEvent.__table__)
           .where(JobEvent.job_id.in_(bindparam("job_ids", expanding=True)), JobEvent.id > bindparam("after"))
           .order_by(JobEvent.id).limit(bindparam("limit")))


def job_view(conn: Connection, tenant_id: str, job_id: str) -> SimpleNamespace | None:
    """The job with `.billing` (None when it has no billing row), attributes named as on the ORM
    classes, so `api.schemas.job_out` serialises it unchanged; None when not in the tenant."""
    row = conn.execute(_VIEW, {"job_id": job_id, "tenant_id": tenant_id}).first()
    if row is None:
        return None
    n = len(_JOB_KEYS)
    billing = dict(zip(_BILLING_KEYS, row[n:]))
    job = SimpleNamespace(**dict(zip(_JOB_KEYS, row[:n])),
                          billing=SimpleNamespace(**billing) if billing["job_id"] is not None else None)
    # Resumable or not (one more indexed query, only for a cancelled or paused run).
    job.resumability = job_resume.describe(conn, job)
    return job


def job_status(conn: Connection, tenant_id: str, job_id: str) -> str | None:
    """The job's status, or None when it is not in the tenant."""
    return conn.execute(_STATUS, {"job_id": job_id, "tenant_id": tenant_id}).scalar()


def statuses(conn: Connection, job_ids: list[str]) -> dict[str, str]:
    """Job id -> status, for ids the caller already checked (the stream poller's subscribers)."""
    return dict(conn.execute(_STATUSES, {"job_ids": job_ids}).all())


def events_after(conn: Connection, job_ids: list[str], after: int, limit: int) -> list:
    """Up to `limit` events of these jobs with an id above `after`, oldest first (rows with the
    JobEvent columns as attributes)."""
    return conn.execute(_EVENTS, {"job_ids": job_ids, "after": after, "limit": limit}).all()
