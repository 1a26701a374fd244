"""What billing does when a job changes status (called by store.transition): a job that ends is
settled; one that pauses releases what it still holds. Apart from jobs.metering, which requeues
paused jobs through store.transition, so that the two import one way."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..billing import settlement
from ..db.models import Job
from .status import JobStatus


def on_transition(session: Session, job: Job, new: JobStatus) -> None:
    """Called by jobs.store.transition: a job that ends is settled; one that pauses releases
    what it still holds."""
    if new.is_terminal:
        spec = job.spec or {}
        metrics = (job.result or {}).get("metrics") or {}
        settlement.settle(session, job.tenant_id, job.id, outcome=new.value, attempts=job.attempts,
                          kind=job.kind, strategy=spec.get("strategy"), model=spec.get("model"),
                          tokens_trained=metrics.get("tokens_processed"))
    elif new == JobStatus.PAUSED:
        settlement.pause(session, job.tenant_id, job.id)
