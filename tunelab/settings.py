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


def default_shared_models() -> Path:
    """The shared models folder (pretrained weights shipped beside the repo, e.g. ResNet-20 for
    CIFAR): TUNELAB_SHARED_MODELS, else the repository's ../shared/datasets/models. Read at call
    time, like default_home, so that the model catalog finds it without building the Settings."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "models"
    return Path(os.environ.get("TUNELAB_SHARED_MODELS") or default)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELAB_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    # Pretrained weights the catalog converts (once, to safetensors in home/models) from here.
    shared_models: Path = Field(default_factory=default_shared_models)
    # SQLite in TUNELAB_HOME unless set, e.g. postgresql+psycopg://user:pass@host/db
    database_url: str | None = None
    max_upload_mb: float = 200.0
    # Uploaded datasets are parsed and validated in this many separate processes (at most that
    # many at once), so that their CPU and memory churn never stalls the API or the worker's
    # heartbeats (services/parsing.py). 0: in the server's own process.
    upload_parsers: int = Field(2, ge=0, le=64)
    # Every other request body (JSON, forms) is capped at this, before it is read (uploads: above).
    max_body_mb: float = 1.0
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
    # Live job streams (SSE) open at once in one server process, per API key (or signed-in user)
    # and per tenant; one more answers 429 (0 turns a limit off). One poller reads the events of
    # every open stream each tick (stream_poll_seconds): two queries a tick, however many streams.
    stream_max_per_key: int = 10
    stream_max_per_tenant: int = 50
    stream_poll_seconds: float = 0.5
    # Webhooks go to public addresses only; these hosts and CIDRs (comma-separated, e.g.
    # "hooks.corp.internal, 10.20.0.0/16") may be internal receivers.
    webhook_allowed_hosts: str = ""
    webhook_timeout_seconds: float = 10.0    # in all per delivery: DNS, connect, TLS, send, reply
    webhook_concurrency: int = 16            # deliveries in flight per worker process...
    webhook_tenant_concurrency: int = 4      # ...of which one tenant's (a hanging receiver stalls only its own)
    webhook_max_per_tenant: int = 20
    # What one job may take (jobs/executors/sandbox.py): per process (address space, CPU time,
    # largest file, processes and threads) and for the job as a whole (disk: its folder plus what it
    # adds to its tenant's cache; resident memory of all its processes, 0 = job_memory_mb; its
    # private memory-backed /tmp), the whole-job figures measured every job_watch_seconds.
    job_memory_mb: int = Field(20_000, gt=0)       # address space; torch reserves more than it touches
    job_cpu_seconds: int = Field(24 * 3600, gt=0)
    job_file_mb: int = Field(20_000, gt=0)
    job_processes: int = Field(512, gt=0)
    job_disk_mb: int = Field(50_000, gt=0)
    job_memory_total_mb: int = Field(0, ge=0)
    job_tmp_mb: int = Field(2_048, gt=0)
    job_watch_seconds: float = Field(5.0, gt=0)
    log_json: bool = True
    log_level: str = "INFO"
    # Identical warnings/errors within this window are logged once, then as one line with a count.
    log_repeat_window_seconds: float = 30.0
    # The audit log's anchors (signed chain heads, appended after each audited commit): default
    # TUNELAB_HOME/audit/anchors.jsonl; better on another volume, or an append-only file.
    audit_anchor_file: Path | None = None
    # The master key's file (created 0600 on first start when missing). Default
    # TUNELAB_HOME/keys/master.key: then a backup of the home holds the key next to the data it
    # unlocks, and the server warns at startup; keep it on another volume (or set
    # TUNELAB_MASTER_KEY from a secret store) in production.
    master_key_file: Path | None = None
    # Model downloads (and exports) decrypting at once in one server process; more answer 429.
    max_concurrent_downloads: int = 4
    # Deployments (model servers) one tenant may have at once; one more answers 429.
    max_deployments_per_tenant: int = Field(5, ge=0)
    # Devices and the worker's queue (H3, issue 20; jobs/devices.py, jobs/scheduling.py): jobs one
    # worker runs at once (None: one per GPU on a GPU worker, 1 on CPU), and GPUs declared instead
    # of detected ("2", or memory MBs "24000,80000": test or dry-run set-ups; "0": none).
    worker_max_jobs: int | None = Field(None, ge=1, le=64)
    worker_gpus: str | None = None
    # Data-parallel jobs (H1, issue 20; training/launch.py): times torchrun restarts all of a job's
    # ranks when one dies (they resume from the last checkpoint) before the attempt fails.
    ddp_max_restarts: int = Field(1, ge=0, le=10)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tunelab.db'}"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def audit_anchors_path(self) -> Path:
        return self.audit_anchor_file or self.home / "audit" / "anchors.jsonl"

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
