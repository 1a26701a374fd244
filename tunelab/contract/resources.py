"""tunelab's own resources (/api/v1): tenants, users, keys, datasets, jobs, comparisons, models, webhooks."""

from __future__ import annotations

from typing import Any, Iterator

from pydantic import Field

from .base import Obj

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Tenant(Obj):
    id: str
    name: str
    created_at: int | None = None
    you: dict[str, Any] = Field(default_factory=dict, description="the caller: user_id and role")
    insecure_mode: bool = False


class User(Obj):
    id: str
    email: str
    role: str
    created_at: int | None = None


class UserList(Obj):
    data: list[User]


class ApiKey(Obj):
    id: str
    name: str = ""
    prefix: str = ""
    user_id: str | None = None
    created_at: int | None = None
    last_used_at: int | None = None
    revoked_at: int | None = None
    key: str | None = None              # only when created: it is not shown again
    note: str | None = None


class ApiKeyList(Obj):
    data: list[ApiKey]


class Dataset(Obj):
    id: str
    filename: str = ""
    purpose: str = ""
    bytes: int = 0
    status: str = ""
    rows: int | None = None
    text_column: str | None = None
    label_column: str | None = None
    labels: int | None = None
    created_at: int | None = None
    report: dict[str, Any] | None = None          # only from upload and get
    stats: dict[str, Any] | None = None


class DatasetList(Obj):
    data: list[Dataset]


class DatasetPreview(Obj):
    data: list[dict[str, Any]] = Field(description="rows: line, text, label")


class JobError(Obj):
    code: str
    message: str = ""


class Job(Obj):
    id: str
    kind: str = "train"
    status: str
    spec: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    created_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    billing: dict[str, Any] | None = None   # estimate (with its range) before it starts; cost as it runs

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


class JobList(Obj):
    data: list[Job]


class JobEvent(Obj):
    id: int
    job_id: str
    type: str                           # status | progress | checkpoint | metrics | log
    level: str = "info"
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None


class EventPage(Obj):
    data: list[JobEvent]
    last_id: int

    def __iter__(self) -> Iterator[JobEvent]:      # type: ignore[override]
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class Model(Obj):
    id: str
    object: str = "model"
    kind: str = ""                      # "tuned", "uploaded", or the catalog model's kind
    base_model: str | None = None
    strategy: str | None = None
    job_id: str | None = None
    metrics: dict[str, Any] | None = None
    created_at: int | None = None


class ModelList(Obj):
    data: list[Model]


class Prediction(Obj):
    text: str
    label: str
    score: float
    scores: dict[str, float] = Field(default_factory=dict)


class PredictionList(Obj):
    model: str
    data: list[Prediction]


class Comparison(Obj):
    id: str
    status: str
    spec: dict[str, Any] = Field(default_factory=dict)
    results: list[dict[str, Any]] = Field(default_factory=list)
    recommended: str | None = None
    reason: str | None = None
    models: dict[str, str] = Field(default_factory=dict)
    job: Job | None = None


class ComparisonList(Obj):
    data: list[Comparison]


class Webhook(Obj):
    id: str
    url: str
    events: list[str] = Field(default_factory=list)
    created_at: int | None = None
    secret: str | None = None           # only when created
    note: str | None = None


class WebhookList(Obj):
    data: list[Webhook]


class WebhookDelivery(Obj):
    id: str
    webhook_id: str
    job_id: str | None = None
    event: str = ""
    status: str = ""
    attempts: int = 0
    response_status: int | None = None
    response_body: str | None = None
    duration_ms: float | None = None
    last_attempt_at: int | None = None
    payload: dict[str, Any] | None = None


class WebhookDeliveryList(Obj):
    data: list[WebhookDelivery]


class AuditEntry(Obj):
    seq: int
    created_at: int | None = None
    actor: str | None = None
    action: str
    target: str | None = None
    data: dict[str, Any] | None = None
    hash: str
    prev_hash: str | None = None


class AuditPage(Obj):
    data: list[AuditEntry]
    total: int
