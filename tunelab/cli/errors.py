"""The one place that turns the library's errors into a message and an exit status: every command
runs through `guarded` (cli.commands.main does it), so the sub-modules raise instead of catching."""

from __future__ import annotations

import functools
import sys

from .exits import EXIT_AUTH, EXIT_CONFIG, EXIT_DATA, EXIT_ERROR


class UsageError(Exception):
    """The command cannot run as given (a malformed --set, no --server): `error: <message>`."""

    def __init__(self, message: str, status: int = EXIT_CONFIG):
        super().__init__(message)
        self.status = status


# The library's deliberate errors, by the public module that exports them: the exit status and what
# comes before the error's own text. They
# are looked up among the modules already imported, never imported here: a class whose module was
# never loaded cannot be what was raised, and remote mode runs where torch (under tunelab.strategies
# and tunelab.artifacts) is not installed.
LIBRARY_ERRORS = [
    ("tunelab.data", "DataError", EXIT_DATA, "error: the data cannot be used:\n"),
    ("tunelab.strategies", "ConfigError", EXIT_CONFIG, "error: "),
    ("tunelab.models", "ModelNotFound", EXIT_CONFIG, "error: "),
    ("tunelab.models", "UnsafeModel", EXIT_CONFIG, "error: "),
    ("tunelab.artifacts", "ArtifactError", EXIT_CONFIG, "error: "),
    ("tunelab.models.llama2c", "ImportFailed", EXIT_CONFIG, "error: "),
    ("tunelab.services.tenants", "Conflict", EXIT_CONFIG, "error: "),
    ("tunelab.jobs.executors", "SandboxUnavailable", EXIT_CONFIG, "error: "),
    ("tunelab.billing.ledger", "BillingError", EXIT_ERROR, "error: "),
]


def _loaded(module: str, name: str) -> type | None:
    return getattr(sys.modules.get(module), name, None)


def explain(exc: BaseException, args=None) -> tuple[str, int] | None:
    """(message for stderr, exit status) for an error a command may raise on purpose; None for
    anything else (a bug: let it raise). `args` gives remote mode's server for a refused key."""
    if isinstance(exc, UsageError):
        return f"error: {exc}", exc.status
    api_error = _loaded("tunelab.sdk", "APIError")
    if api_error is not None and isinstance(exc, api_error):
        lines = [f"error: {exc}"]
        for issue in (exc.body.get("issues") or [])[:20]:
            lines.append(f"  - {issue.get('message', issue) if isinstance(issue, dict) else issue}")
        if exc.status in (401, 403):
            lines.append(f"  (server {getattr(args, 'server', None)}; check --api-key / TUNELAB_API_KEY)")
            return "\n".join(lines), EXIT_AUTH
        return "\n".join(lines), EXIT_ERROR
    for module, name, status, lead in LIBRARY_ERRORS:
        cls = _loaded(module, name)
        if cls is not None and isinstance(exc, cls):
            return f"{lead}{exc}", status
    return None


def guarded(command):
    """`command(args) -> status`, with the errors `explain` knows printed and turned into statuses."""
    @functools.wraps(command)
    def run(args) -> int:
        try:
            return command(args)
        except Exception as exc:
            explained = explain(exc, args)
            if explained is None:
                raise
            print(explained[0], file=sys.stderr)
            return explained[1]
    return run
