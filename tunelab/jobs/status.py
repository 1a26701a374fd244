"""Job status: a str Enum with guarded transitions (after Ray's JobStatus)."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    QUEUED = "queued"
    VALIDATING = "validating"
    RUNNING = "running"
    PAUSED = "paused"          # waiting for credit (billing), or stopped; resumes from its checkpoint
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        """Over for now: a cancelled run may still be resumed (services.job_resume)."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def can_resume(self) -> bool:
        """A status a run is resumed from, from its last checkpoint, by a user's request."""
        return self in (JobStatus.CANCELLED, JobStatus.PAUSED)

    def can_become(self, new: "JobStatus") -> bool:
        return new in _ALLOWED[self]


_ALLOWED: dict[JobStatus, set[JobStatus]] = {
    # back to QUEUED = requeued after an infrastructure failure or an expired lease
    JobStatus.QUEUED: {JobStatus.VALIDATING, JobStatus.CANCELLED, JobStatus.FAILED},
    JobStatus.VALIDATING: {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED},
    JobStatus.RUNNING: {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED,
                        JobStatus.QUEUED},
    JobStatus.PAUSED: {JobStatus.QUEUED, JobStatus.CANCELLED},
    JobStatus.SUCCEEDED: set(),
    JobStatus.FAILED: set(),
    # Resumed from its last checkpoint (services.job_resume: only a run that wrote one, asked for by a
    # user); the only way out of a terminal status, so a cancelled run's id, events and ledger go on.
    JobStatus.CANCELLED: {JobStatus.QUEUED},
}


class InvalidTransition(ValueError):
    def __init__(self, old: JobStatus, new: JobStatus):
        super().__init__(f"a job that is {old.value} cannot become {new.value}")
        self.old, self.new = old, new
