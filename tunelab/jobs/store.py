"""Job rows: creation (idempotent), guarded transitions recorded as events, progress events,
and the queue itself: claim with a lease, heartbeat, and requeue of jobs whose worker died.

The claim is safe with many workers on either backend: PostgreSQL skips rows another worker has
locked (FOR UPDATE SKIP LOCKED); on both, the claiming UPDATE is a compare-and-set on
`lease_version`, so of two workers that saw the same row only one gets it.

The claim's `lease_version` is also the fencing token: a worker that stalled past its lease (paused,
cut off from the database) may find the job requeued and claimed by another when it wakes up, so
whatever it records is guarded by `hold`, a compare-and-set on (lease_owner, lease_version).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.models import Job, JobEvent, utcnow
from .spec import JobSpec
from .status import InvalidTransition, JobStatus

log = logging.getLogger("tunelab.jobs")


def add_event(session: Session, job: Job, type_: str, message: str = "", data: dict | None = None,
              level: str = "info") -> JobEvent:
    ev = JobEvent(tenant_id=job.tenant_id, job_id=job.id, type=type_, message=message, data=data or {},
                  level=level)
    session.add(ev)
    return ev


def transition(session: Session, job: Job, new: JobStatus, message: str = "", **data) -> None:
    old = JobStatus(job.status)
    if not old.can_become(new):
        raise InvalidTransition(old, new)
    job.status = new.value
    now = utcnow()
    if new == JobStatus.RUNNING and job.started_at is None:
        job.started_at = now
    if new.is_terminal:
        job.finished_at = now
        job.lease_owner, job.lease_expires_at = None, None
    if new in (JobStatus.QUEUED, JobStatus.PAUSED):
        job.lease_owner, job.lease_expires_at = None, None
    if new == JobStatus.QUEUED:         # its next attempt is placed anew (each attempt's is in its events)
        job.placement = None
    add_event(session, job, "status", message or f"Job {new.value}.",
              {"from": old.value, "to": new.value, **data}, level="error" if new == JobStatus.FAILED else "info")
    # The console's one line per event (a person running `make demo` sees the job move).
    log.log(logging.WARNING if new == JobStatus.FAILED else logging.INFO, f"job {new.value}: {message or job.id}",
            extra={"job": job.id})
    from .billing_hooks import on_transition     # billing: settle what ends, release what pauses

    on_transition(session, job, new)


def create_job(session: Session, tenant_id: str, spec: JobSpec, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """(job, created). The same idempotency key again returns the first job, even under a race."""
    if idempotency_key:
        existing = session.scalars(select(Job).where(Job.tenant_id == tenant_id,
                                                     Job.idempotency_key == idempotency_key)).first()
        if existing is not None:
            return existing, False
    job = Job(tenant_id=tenant_id, kind=spec.kind, spec=spec.model_dump(mode="json"),
              idempotency_key=idempotency_key, status=JobStatus.QUEUED.value)
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:          # a concurrent request with the same key won
        existing = session.scalars(select(Job).where(Job.tenant_id == tenant_id,
                                                     Job.idempotency_key == idempotency_key)).first()
        if existing is None:
            raise
        return existing, False
    add_event(session, job, "status", "Job created and queued.", {"to": JobStatus.QUEUED.value})
    return job, True


def claim(session: Session, worker_id: str, lease_seconds: float) -> Job | None:
    """Take the oldest queued job, with a lease. Commits. (The worker claims through
    jobs/scheduling.py: the same compare-and-set, fair across tenants, within its devices and the
    tenants' gpus quota, with the placement recorded.)"""
    # A claimed job stays `queued` until its worker moves it on (another transaction): only jobs
    # with no lease are free.
    free = (Job.status == JobStatus.QUEUED.value, Job.lease_owner.is_(None))
    q = select(Job.id, Job.lease_version).where(*free).order_by(Job.created_at).limit(5)
    if session.bind.dialect.name == "postgresql":
        # One row: locking several would make concurrent workers skip jobs they could take.
        q = q.limit(1).with_for_update(skip_locked=True)
    for job_id, version in session.execute(q).all():
        done = session.execute(
            update(Job).where(Job.id == job_id, Job.lease_version == version, *free)
            .values(lease_owner=worker_id, lease_version=version + 1,
                    lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
                    attempts=Job.attempts + 1)
            .execution_options(synchronize_session=False))
        if done.rowcount == 1:
            session.commit()
            job = session.get(Job, job_id)
            session.refresh(job)
            return job
    session.commit()
    return None


def hold(session: Session, job: Job, worker_id: str, version: int, lease_seconds: float) -> bool:
    """Renew this worker's lease on the job if it still holds the claim it made (`version`: the
    job's lease_version then); False when it lost it (the job was requeued, maybe claimed again):
    it must then record nothing more of this attempt. The UPDATE is the check, so nothing can come
    between them: on PostgreSQL it keeps the job's row locked until this transaction commits
    (requeue_expired skips locked rows; a claim waits), on SQLite the transaction holds the
    database's write lock, so what the transaction then records is still the holder's."""
    done = session.execute(
        update(Job).where(Job.id == job.id, Job.lease_owner == worker_id, Job.lease_version == version)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    return done.rowcount == 1


def _locked(session: Session, query):
    """`query`'s rows locked for this transaction, skipping those another holds (PostgreSQL; SQLite
    serialises writers anyway): a row read here is then still current when it is written, and a
    job whose worker holds it right now (`hold`) is never requeued under it."""
    query = query.execution_options(populate_existing=True)     # the row as locked, not as cached
    if session.bind.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def requeue_expired(session: Session, now: datetime | None = None, max_attempts: int = 3) -> list[str]:
    """The reconciler: jobs left validating/running by a worker that stopped renewing its lease
    go back to the queue (and resume from their checkpoint), or fail after max_attempts."""
    now = now or utcnow()
    stale = session.scalars(_locked(session, select(Job).where(
        Job.status.in_([JobStatus.VALIDATING.value, JobStatus.RUNNING.value]),
        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)))).all()
    touched = []
    # Claimed but never started (the worker died in between): free again, still queued.
    orphans = session.scalars(_locked(session, select(Job).where(
        Job.status == JobStatus.QUEUED.value, Job.lease_owner.is_not(None), Job.lease_expires_at < now))).all()
    for job in orphans:
        add_event(session, job, "log", f"Worker {job.lease_owner} stopped before starting the job; released.")
        job.lease_owner, job.lease_expires_at = None, None
        touched.append(job.id)
    for job in stale:
        if job.attempts >= max_attempts:
            job.error_code, job.error_message = "worker_lost", "The job's worker stopped responding too many times."
            transition(session, job, JobStatus.FAILED, f"Worker lost {job.attempts} times; giving up.")
        else:
            transition(session, job, JobStatus.QUEUED,
                       f"Worker {job.lease_owner or '?'} stopped responding; requeued to resume from its last checkpoint.",
                       reason="lease_expired")
        touched.append(job.id)
    session.commit()
    return touched
