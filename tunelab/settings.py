"""Service settings, read once from the environment (TUNELAB_*) and validated (pydantic-settings).

The library (data, models, strategies, runner) does not read these: it takes explicit arguments.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path(os.environ.get("TUNELAB_HOME") or Path.home() / ".tunelab")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELAB_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    # SQLite in TUNELAB_HOME unless set, e.g. postgresql+psycopg://user:pass@host/db
    database_url: str | None = None
    max_upload_mb: float = 200.0
    # Job leases: a worker renews its lease every heartbeat; a lease not renewed for
    # lease_seconds means the worker died, and the job is requeued.
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 2.0
    max_attempts: int = 3            # infrastructure failures only; bad data fails at once
    cancel_grace_seconds: float = 30.0
    worker_poll_seconds: float = 0.5
    in_process_worker: bool = True   # `tunelab serve` runs a worker too: one command is a product
    # Jobs run under bubblewrap (no network, nothing of TUNELAB_HOME but their own folder). Where
    # bubblewrap cannot run, jobs are refused unless an admin sets insecure_mode: plain
    # subprocesses then, and every page and /healthz says so.
    insecure_mode: bool = False
    # The platform operator's API key (grants, top-ups, quotas: /api/v1/admin/billing); unset = off.
    operator_api_key: str | None = None
    # Requests a minute per API key, and failed sign-ins / bad keys a minute per client address
    # (0 turns a limit off).
    rate_limit_per_key: int = 3000
    rate_limit_failed_auth: int = 30
    log_json: bool = True
    log_level: str = "INFO"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tunelab.db'}"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
