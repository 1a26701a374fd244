"""Jobs: status machine, spec, the database-backed queue, the worker and its executors."""

from .spec import JobSpec
from .status import InvalidTransition, JobStatus

__all__ = ["InvalidTransition", "JobSpec", "JobStatus"]
