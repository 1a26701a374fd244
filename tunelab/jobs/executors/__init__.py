"""How a job's process is started: locally now; a sandbox and a cluster executor plug in here."""

from .base import Execution, Executor
from .local import LocalExecutor

__all__ = ["Execution", "Executor", "LocalExecutor"]
