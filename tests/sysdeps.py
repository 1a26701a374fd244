"""A missing system dependency is never a quiet change of what a test tests: it is a failure under
`make test` (TUNELAB_TEST_STRICT_DEPS=1, set by the Makefile after scripts/system-deps installed
everything), and elsewhere an explicit skip that the end of the run counts (tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

PREFIX = "missing system dependency"


def missing_dependency(what: str, fix: str) -> None:
    message = f"{PREFIX}: {what}. {fix}"
    if os.environ.get("TUNELAB_TEST_STRICT_DEPS") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def postgres_url() -> str:
    url = os.environ.get("TUNELAB_TEST_POSTGRES_URL")
    if not url:
        missing_dependency("PostgreSQL (TUNELAB_TEST_POSTGRES_URL is not set)",
                           "Run the suite with `make test` (it starts a throwaway cluster), or "
                           "`scripts/pg-test-server run -- .venv/bin/python -m pytest ...`.")
    return url


def require_sandbox() -> None:
    from tunelab.jobs.executors import sandbox_problem

    problem = sandbox_problem()
    if problem:
        missing_dependency(f"the job sandbox ({problem})", "Run `scripts/system-deps test`.")
