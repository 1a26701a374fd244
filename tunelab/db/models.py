"""The service's tables (SQLAlchemy 2). Every tenant-owned row carries `tenant_id`; the only way
routes reach those rows is `db.scoped.TenantScope`, which filters on it. The declarative base and
the column helpers are db/base.py; billing's tables are db/ledger.py, the audit log's db/audit.py:
importing this module registers them all (on Base.metadata, for migrations) and lists every
tenant-owned table in TENANT_OWNED."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePath

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .audit import AuditEvent  # noqa: F401  (registered on Base.metadata for migrations)
from .base import Base, TenantOwned, UTCDateTime, new_id, utcnow  # noqa: F401  (re-exported)
from .ledger import BILLING_TENANT_OWNED


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ten_"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(TenantOwned, Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr_"))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16), default="member")   # admin | member | viewer
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(TenantOwned, Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key_"))
    user_id: Mapped[str] = mapped_column(String(40), ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16), unique=True)    # looked up by this, shown in lists
    hash: Mapped[str] = mapped_column(String(64))                  # sha256 of the whole key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


MAX_NAME = 120          # a dataset's or a tuned model's human name (API: 1-120 printable characters)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_DATA_SUFFIXES = {".csv", ".tsv", ".txt", ".json", ".jsonl", ".parquet", ".xlsx", ".gz", ".zst", ".bz2", ".xz"}


def default_dataset_name(filename: str | None) -> str:
    """A file's name for people: "sms_spam.csv" -> "sms_spam" (data suffixes off, at most 120
    printable characters); "dataset" when nothing is left."""
    path = PurePath(_UNPRINTABLE.sub(" ", filename or "").replace("\\", "/")).name
    while PurePath(path).suffix.lower() in _DATA_SUFFIXES and PurePath(path).stem:
        path = PurePath(path).stem
    return path.strip()[:MAX_NAME].strip() or "dataset"


def _dataset_name_default(context) -> str:
    return default_dataset_name(context.get_current_parameters().get("filename"))


class Dataset(TenantOwned, Base):
    """An uploaded file (OpenAI calls these files: same ids). The bytes live in the content-
    addressed DatasetStore under `sha256`; this row is the tenant's handle on them."""
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("file-"))
    filename: Mapped[str] = mapped_column(String(300))
    # what people call it (renamed at will; the id stays): the file name without its suffix unless given
    name: Mapped[str] = mapped_column(String(MAX_NAME), default=_dataset_name_default, server_default="")
    purpose: Mapped[str] = mapped_column(String(40), default="fine-tune")
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16))                # processed | error
    text_column: Mapped[str | None] = mapped_column(String(200), default=None)
    label_column: Mapped[str | None] = mapped_column(String(200), default=None)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict] = mapped_column(default=dict)
    stats: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(TenantOwned, Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),
                      Index("ix_jobs_claim", "status", "created_at"))
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ftjob-"))
    kind: Mapped[str] = mapped_column(String(16), default="train")     # train | compare
    status: Mapped[str] = mapped_column(String(16), default="queued")
    spec: Mapped[dict] = mapped_column(default=dict)                  # jobs.spec.JobSpec as JSON
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_version: Mapped[int] = mapped_column(Integer, default=0)    # compare-and-set on claims
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict] = mapped_column(default=dict)              # the latest progress tick
    result: Mapped[dict] = mapped_column(default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(120), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # where the latest attempt runs or ran: node, executor, devices, processes (jobs/devices.py)
    placement: Mapped[dict | None] = mapped_column(default=None)


class JobEvent(TenantOwned, Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(16))      # status | progress | checkpoint | log | metrics
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TunedModel(TenantOwned, Base):
    __tablename__ = "tuned_models"
    id: Mapped[str] = mapped_column(String(120), primary_key=True)    # ft:<base>:<tenant>:<strategy>:<job>
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    base_model: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(40))
    # what people call it (renamed at will; the id stays): the job's model_name, else "<dataset> — <strategy>"
    name: Mapped[str] = mapped_column(String(MAX_NAME), default="", server_default="")
    artifact_path: Mapped[str] = mapped_column(String(1000))
    metrics: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(TenantOwned, Base):
    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("wh_"))
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))
    events: Mapped[list] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(TenantOwned, Base):
    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("whd_"))
    webhook_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")   # pending | delivered | failed
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    duration_ms: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(TenantOwned, Base):
    """Tuned models served from processes of their own (serving/supervisor.py): one tuned model, a
    base with several adapters of it, or one catalog causal LM. The counters are what it answered."""
    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dep_"))
    name: Mapped[str] = mapped_column(String(MAX_NAME), default="")
    kind: Mapped[str] = mapped_column(String(16))                   # generate | classify
    models: Mapped[list] = mapped_column(default=list)              # tuned model ids, or one catalog name
    base_model: Mapped[str | None] = mapped_column(String(200), default=None)   # the adapters' shared base
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    idle_seconds: Mapped[float] = mapped_column(Float, default=900.0)
    engine: Mapped[str] = mapped_column(String(16), default="torch")
    batch_window_ms: Mapped[float] = mapped_column(Float, default=5.0)
    requests_served: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Billing (credits, usage, quotas) lives in its own module; its tenant-owned tables are scoped too.
TENANT_OWNED = [User, ApiKey, Dataset, Job, JobEvent, TunedModel, Webhook, WebhookDelivery, Deployment,
                *BILLING_TENANT_OWNED]
