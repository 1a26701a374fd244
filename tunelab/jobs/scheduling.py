"""Which queued job a worker takes next: fair across tenants, within its free devices and each
tenant's `gpus` quota.

Order: the tenant with fewer jobs running first, then the tenant served least recently (its latest
job start), then the oldest job; so one tenant's fifty queued jobs do not starve another's one.
A job that does not fit the worker's free devices, or whose tenant is at its `gpus` quota, is
skipped (a later one may fit) and stays queued; the reason is written once on the job (an event,
and its progress while it waits), e.g. "waiting for a GPU: your quota is 1 and 1 is in use".

Claims are the compare-and-set of store.claim (the lease_version is the fencing token). The quota
is counted over the jobs that hold a lease, with their placement (recorded in the same UPDATE as
the claim); so that two workers cannot both take a tenant's last GPU, claims are serialised: on
PostgreSQL by a transaction-scoped advisory lock, on SQLite by its single writer (the claiming
UPDATE comes before the count, and a rejected claim is rolled back).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from ..billing import quotas
from ..db.models import Job, JobEvent, utcnow
from . import store
from .devices import Devices, Need, Reservation, placement_line
from .status import JobStatus

log = logging.getLogger("tunelab.jobs")
CANDIDATES = 500            # queued jobs looked at a claim (the oldest)
_CLAIM_LOCK = 0x74756E65    # pg_advisory_xact_lock key: "tune"
WAITING = "waiting"         # progress["phase"] of a queued job that says why it waits
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def held_gpus(spec: dict, placement: dict | None) -> int:
    """GPUs a job with a lease holds: as placed, else as its spec would be placed."""
    placed = (placement or {}).get("gpus") if isinstance(placement, dict) else None
    if isinstance(placed, list):
        return len(placed)
    if isinstance(placed, int) and not isinstance(placed, bool):      # a cluster executor's count
        return placed
    return quotas.gpus_of(spec or {})


def quota_reason(limit: int, used: int, need: int) -> str | None:
    if used + need <= limit:
        return None
    if need > limit:
        return (f"waiting for GPUs: it needs {need} and your quota is {limit}; ask your operator to raise the "
                "gpus quota, or run it on fewer processes")
    return f"waiting for a GPU: your quota is {limit} and {used} {'is' if used == 1 else 'are'} in use"


class Scheduler:
    """One worker's side of the queue: its devices, and the reasons it already wrote."""

    def __init__(self, devices: Devices, describe: Callable[[Reservation], dict]):
        self.devices, self.describe = devices, describe
        self.noted: dict[str, str] = {}         # job id -> the reason last written on it

    def claim(self, session: Session, worker_id: str, lease_seconds: float) -> tuple[Job, Reservation] | None:
        """Take the next job that fits, with a lease and its devices reserved. Commits."""
        if not self.devices.has_room():
            return None
        _serialise(session)
        rows = session.execute(select(Job.id, Job.tenant_id, Job.spec, Job.lease_version, Job.created_at, Job.progress)
                               .where(Job.status == JobStatus.QUEUED.value, Job.lease_owner.is_(None))
                               .order_by(Job.created_at).limit(CANDIDATES)).all()
        if not rows:
            session.commit()
            return None
        active = _active(session)
        last = _last_start(session, {r.tenant_id for r in rows})
        rows.sort(key=lambda r: (len(active[r.tenant_id]), last.get(r.tenant_id) or _EPOCH, r.created_at))
        limits: dict[str, int] = {}
        for row in rows:
            need = self.devices.need_of(row.spec)
            reason = self._quota(session, row.tenant_id, need, active, limits) or self.devices.why_not(need)
            if reason:
                self._note(session, row, reason)
                continue
            held = self.devices.reserve(row.id, need)
            if held is None:
                continue
            if self._take(session, row, worker_id, lease_seconds, held):
                self.noted.pop(row.id, None)
                job = session.get(Job, row.id)
                session.refresh(job)
                return job, held
            self.devices.release(row.id)
        session.commit()
        return None

    def _quota(self, session, tenant_id: str, need: Need, active, limits: dict) -> str | None:
        if not need.gpus:
            return None
        if tenant_id not in limits:
            limits[tenant_id] = quotas.limits(session, tenant_id)["gpus"]
        used = sum(held_gpus(spec, placement) for spec, placement in active[tenant_id])
        return quota_reason(limits[tenant_id], used, need.gpus)

    def _take(self, session, row, worker_id: str, lease_seconds: float, held: Reservation) -> bool:
        free = (Job.id == row.id, Job.lease_version == row.lease_version, Job.status == JobStatus.QUEUED.value,
                Job.lease_owner.is_(None))
        values = dict(lease_owner=worker_id, lease_version=row.lease_version + 1,
                      lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
                      attempts=Job.attempts + 1, placement=self.describe(held))
        if _waiting(row.progress):       # the note goes with the wait (a resumed job's last tick stays)
            values["progress"] = {}
        done = session.execute(update(Job).where(*free).values(**values).execution_options(synchronize_session=False))
        if done.rowcount != 1:
            return False
        if held.gpus and self._over_quota_now(session, row):
            session.rollback()          # another worker's claim came first; this one never happened
            self.noted.clear()          # (nor the notes written in this transaction)
            _serialise(session)
            return False
        session.commit()
        return True

    def _over_quota_now(self, session, row) -> bool:
        """Counted again after the claim, inside its transaction: on SQLite nothing came between."""
        limit = quotas.limits(session, row.tenant_id)["gpus"]
        used = sum(held_gpus(spec, placement) for spec, placement in _active(session, row.tenant_id)[row.tenant_id])
        return used > limit

    def _note(self, session, row, reason: str) -> None:
        """The reason on the job, once (again only when it changes): an event, and its progress
        unless it holds a tick of an earlier attempt."""
        if self.noted.get(row.id) == reason:
            return
        self.noted[row.id] = reason
        if len(self.noted) > 10 * CANDIDATES:        # jobs long gone; written again at worst
            self.noted = dict(list(self.noted.items())[-CANDIDATES:])
        message = reason[0].upper() + reason[1:] + "."
        if not row.progress or _waiting(row.progress):
            session.execute(update(Job).where(Job.id == row.id, Job.status == JobStatus.QUEUED.value,
                                              Job.lease_owner.is_(None))
                            .values(progress={"phase": WAITING, "message": message})
                            .execution_options(synchronize_session=False))
        session.add(JobEvent(tenant_id=row.tenant_id, job_id=row.id, type="log", message=message,
                             data={"waiting": reason}, level="info"))
        log.info("job waits", extra={"job": row.id, "reason": reason})


def record_placement(session: Session, job: Job, more: dict | None = None) -> bool:
    """Where the job runs, said on the job (an event): as the worker reserved it, with what a
    cluster executor adds once a node accepted it (its `placement`: node id, address...)."""
    if more:
        job.placement = {**(job.placement or {}), **more}
    if job.placement:
        store.add_event(session, job, "log", placement_line(job.placement) + ".", {"placement": job.placement})
    return True


def _waiting(progress) -> bool:
    return isinstance(progress, dict) and progress.get("phase") == WAITING


def _serialise(session: Session) -> None:
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CLAIM_LOCK})


def _active(session: Session, tenant_id: str | None = None) -> dict[str, list[tuple[dict, dict | None]]]:
    """Per tenant, the (spec, placement) of its jobs that hold a lease (claimed, validating, running)."""
    q = select(Job.tenant_id, Job.spec, Job.placement).where(
        Job.status.in_(quotas.ACTIVE), Job.lease_owner.is_not(None))
    if tenant_id is not None:
        q = q.where(Job.tenant_id == tenant_id)
    out: dict[str, list] = defaultdict(list)
    for tenant, spec, placement in session.execute(q).all():
        out[tenant].append((spec, placement))
    return out


def _last_start(session: Session, tenants: set[str]) -> dict[str, datetime]:
    rows = session.execute(select(Job.tenant_id, func.max(Job.started_at))
                           .where(Job.tenant_id.in_(tenants)).group_by(Job.tenant_id)).all()
    return {t: _aware(at) for t, at in rows if at is not None}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
