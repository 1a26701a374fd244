"""Resuming a cancelled or paused run from its last checkpoint (`POST /api/v1/jobs/{id}/resume`, the
"Resume from step N" button, `client.jobs.resume`, `tunelab jobs resume`).

A run is resumable when it is a training job (the kind that writes checkpoints), cancelled or
paused, that reported a checkpoint, and whose checkpoint is still in its folder. Resuming keeps the
job's id: it goes back to the queue (a status event, "Resumed by ..."), a worker claims it, and the
training loop loads the checkpoint with its optimizer and random state and skips the batches done
(same seed, same data order), so it ends with the metrics of a run never interrupted.

Money: a cancelled job's billing row was settled; it is opened again with a fresh reservation (the
same amount a top-up reserves for a paused job). The meter's frontier survives on that row, so the
steps paid for before the cancel are measured again but never charged twice (billing.metering).

The checkpoint folder (`<TUNELAB_HOME>/jobs/<tenant>/<job>/work/checkpoints`) of a cancelled or
paused run is kept until the run succeeds (the model is then written and the checkpoint removed)
or its tenant is deleted.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..billing import InsufficientCredit, ledger, quotas, settlement
from ..db.models import Job, JobEvent, User
from ..jobs import store
from ..jobs.jobdir import CHECKPOINTS, WORK
from ..jobs.status import JobStatus
from ..security import safe_fs

RESUMABLE_KIND = "train"         # comparisons and hardware benchmarks write no checkpoints
_EVENTS = JobEvent.__table__
_LAST_CHECKPOINT = (select(_EVENTS.c.job_id, _EVENTS.c.data)
                    .where(_EVENTS.c.id.in_(select(func.max(_EVENTS.c.id))
                                            .where(_EVENTS.c.job_id.in_(bindparam("job_ids", expanding=True)),
                                                   _EVENTS.c.type == "checkpoint")
                                            .group_by(_EVENTS.c.job_id))))


class NotResumable(ValueError):
    """409: the sentence says why."""


@dataclass(frozen=True)
class Resumability:
    resumable: bool
    reason: str                 # a sentence: from which step it resumes, or why it cannot
    step: int | None = None     # the checkpoint's training step


def checkpoint_steps(conn: Connection, job_ids: list[str]) -> dict[str, int]:
    """Job id -> the step of the last checkpoint it reported (jobs that reported none are left
    out). One query for any number of jobs; call with ids already scoped to the caller's tenant."""
    if not job_ids:
        return {}
    out = {}
    for job_id, data in conn.execute(_LAST_CHECKPOINT, {"job_ids": list(job_ids)}).all():
        step = (data or {}).get("step") if isinstance(data, dict) else None
        if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
            out[job_id] = step
    return out


def assess(kind: str, status: str, step: int | None) -> Resumability:
    """Whether a job can be resumed, as the read model shows it (the disk is checked on resume)."""
    try:
        st = JobStatus(status)
    except ValueError:
        return Resumability(False, f"A job that is {status} cannot be resumed.")
    if kind != RESUMABLE_KIND:
        what = "A hardware benchmark" if kind == "bench-hardware" else "A comparison"
        return Resumability(False, f"{what} writes no checkpoints, so it cannot be resumed: run it again.")
    if st == JobStatus.SUCCEEDED:
        return Resumability(False, "The run succeeded: there is nothing left to resume.")
    if st == JobStatus.FAILED:
        return Resumability(False, "A failed run is not resumed: fix what its error says and start a new run.")
    if not st.can_resume:
        return Resumability(False, f"The run is {st.value}: only a cancelled or paused run can be resumed.")
    if step is None:
        return Resumability(False, f"The run is {st.value} but wrote no checkpoint (it stopped before its first "
                                   "one, or its strategy trains without steps): start a new run instead.")
    return Resumability(True, f"Resumes from its checkpoint at step {step}.", step)


def describe(conn: Connection, job) -> Resumability:
    """`assess` for one job (a row or a read view), reading its checkpoint only when it matters."""
    needs_step = job.kind == RESUMABLE_KIND and JobStatus(job.status).can_resume
    step = checkpoint_steps(conn, [job.id]).get(job.id) if needs_step else None
    return assess(job.kind, job.status, step)


def attach(conn: Connection, jobs: list) -> None:
    """Set `.resumability` on each job of a page (read by api.schemas.job_out), with one query for
    all their checkpoints."""
    wanted = [j.id for j in jobs if j.kind == RESUMABLE_KIND and JobStatus(j.status).can_resume]
    steps = checkpoint_steps(conn, wanted)
    for j in jobs:
        j.resumability = assess(j.kind, j.status, steps.get(j.id))


def checkpoint_on_disk(job_folder: Path) -> bool:
    """Is `work/checkpoints/LATEST` a regular file in the job's folder? Read without following a
    link the sandboxed job may have left there."""
    try:
        with safe_fs.opened_dir(job_folder) as root, safe_fs.walk_to(root, [WORK, CHECKPOINTS]) as ckpts:
            st = safe_fs.lstat_at(ckpts, "LATEST")
    except OSError:
        return False
    return st is not None and stat.S_ISREG(st.st_mode)


def resume(session: Session, job: Job, jobs_dir: Path, by: str) -> int:
    """Requeue a cancelled or paused run to go on from its checkpoint; the checkpoint's step.
    NotResumable (409), QuotaExceeded (429) or InsufficientCredit (402); the caller commits and
    audits."""
    acct = ledger.lock_account(session, job.tenant_id)     # serialises with the worker and top-ups
    session.refresh(job)
    found = describe(session.connection(), job)
    if not found.resumable:
        raise NotResumable(found.reason)
    if not checkpoint_on_disk(Path(jobs_dir) / job.tenant_id / job.id):
        raise NotResumable(f"The checkpoint at step {found.step} is no longer on disk: start a new run instead.")
    quotas.check_job(session, job.tenant_id, job.spec or {})
    jb = ledger.job_billing(session, job.id)
    if jb is not None and jb.state in ("paused", "settled"):
        need = settlement.resume_amount(jb)
        available = acct.available - settlement.unbilled_serving(acct)
        if available < need:
            raise InsufficientCredit(need, available)
        ledger.reserve(session, acct, jb, need, memo="reserved again: the job resumes from its checkpoint")
        # Settled at the cancel, open again: its meter frontier stays, so no step is charged twice.
        jb.state, jb.settled_at, jb.actual = "open", None, {}     # the actual is made again at its end
    job.cancel_requested = False
    job.finished_at = None
    store.transition(session, job, JobStatus.QUEUED, f"Resumed by {by} from its checkpoint at step {found.step}.",
                     reason="resumed", step=found.step, by=by)
    return found.step


def person(session: Session, principal) -> str:
    """How the status event names who resumed the job: the user's e-mail, else the API key's id."""
    user = session.get(User, principal.user_id) if principal.user_id else None
    return getattr(user, "email", None) or (f"API key {principal.key_id}" if principal.key_id else "a user")
