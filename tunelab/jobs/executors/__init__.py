"""How a job's process is started: locally now; a sandbox and a cluster executor plug in here."""

from .base import Execution, Executor
from .local import LocalExecutor
from .sandbox import Limits, SandboxExecutor, sandbox_problem

__all__ = ["SandboxUnavailable", "executor_for", "Execution", "Executor", "Limits", "LocalExecutor", "SandboxExecutor", "sandbox_problem"]


class SandboxUnavailable(RuntimeError):
    pass


def executor_for(insecure_mode: bool):
    """The sandbox; or, only when an admin chose insecure mode, plain local subprocesses."""
    if insecure_mode:
        return LocalExecutor()
    problem = sandbox_problem()
    if problem:
        raise SandboxUnavailable(f"Jobs are refused: they must run sandboxed and {problem}. "
                                 "Install bubblewrap, or set TUNELAB_INSECURE_MODE=1 to run jobs unsandboxed.")
    return SandboxExecutor()
